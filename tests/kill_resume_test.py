"""CI-sized run of experiments/kill_resume.py: SIGKILLed twice, resumed, identical results."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # end-to-end runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_killed_twice_and_resumed_equals_uninterrupted():
  proc = subprocess.run([sys.executable, "-m", "experiments.kill_resume", "--kills", "2", "--seed", "1",
                         "--num-tasks", "2", "--epochs", "1"],
                        cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert proc.stdout.count("SIGKILL") == 2
  assert '"identical_results": true' in proc.stdout
