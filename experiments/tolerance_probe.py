"""Rerun the tests that compare two float computations under other XLA:CPU code generation.

XLA:CPU orders float sums by the instruction set it targets (vector width, matrix kernels), so
a tolerance that passes on one CPU can fail on another. This script reruns the given test
files under XLA flags that emulate other CPUs (`--xla_cpu_max_isa`, a wider preferred vector
width) or reorder sums freely (fast math), and writes which tests fail where:

  python -m experiments.tolerance_probe --out experiments/results/tolerance_probe.json

A test that passes by default and fails under a setting has a tolerance fitted to one CPU.
Fast math is a stress test beyond any real CPU (it may also flush denormals and skip NaN
checks), so its failures are reported apart and read with care.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from experiments.benchmark import cpu_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SETTINGS = {
    "default": "",
    "avx2": "--xla_cpu_max_isa=AVX2",
    "sse4_2": "--xla_cpu_max_isa=SSE4_2",
    "vector_width_512": "--xla_cpu_prefer_vector_width=512",
    "fast_math": "--xla_cpu_enable_fast_math=true",
}

# Every test module that compares two different computations of the same floats.
FILES = [
    "tests/sharding_test.py", "tests/train_test.py", "tests/parallel_seeds_test.py", "tests/models_test.py",
    "tests/pah_test.py", "tests/methods_test.py", "tests/losses_test.py", "tests/optim_test.py",
    "tests/prototypes_test.py", "tests/pretrained_test.py",
]


def run_setting(flags: str, files: list[str], workers: str) -> dict:
  """pytest under XLA_FLAGS=flags: {test id: "passed" | "failed" | "skipped"} and the wall time."""
  with tempfile.TemporaryDirectory() as tmp:
    report = os.path.join(tmp, "junit.xml")
    env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()}
    start = time.time()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", workers, "--dist", "loadfile", f"--junitxml={report}",
                    *files], cwd=ROOT, env=env, check=False)
    seconds = time.time() - start
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
      name = f"{case.get('classname')}::{case.get('name')}"
      failed = case.find("failure") is not None or case.find("error") is not None
      outcomes[name] = "failed" if failed else "skipped" if case.find("skipped") is not None else "passed"
  return {"xla_flags": flags, "seconds": round(seconds, 1), "outcomes": outcomes}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="JSON file to write")
  parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated subset of {list(SETTINGS)}")
  parser.add_argument("--workers", default="auto", help="pytest-xdist workers")
  parser.add_argument("files", nargs="*", default=FILES, help="test files (default: every float comparison)")
  args = parser.parse_args()
  names = [s for s in args.settings.split(",") if s]
  unknown = [s for s in names if s not in SETTINGS]
  if unknown:
    print(f"error: unknown settings {unknown}: choose from {list(SETTINGS)}", file=sys.stderr)
    sys.exit(2)
  import jax  # pylint: disable=g-import-not-at-top
  runs = {name: run_setting(SETTINGS[name], args.files, args.workers) for name in names}
  failures = {name: sorted(t for t, o in run["outcomes"].items() if o == "failed") for name, run in runs.items()}
  result = {"cpu": cpu_model(), "python": platform.python_version(), "jax": jax.__version__,
            "settings": runs, "failures": failures}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  for name, failed in failures.items():
    print(f"{name:18s} {len(failed)} failed" + "".join(f"\n  {t}" for t in failed))


if __name__ == "__main__":
  main()
