"""experiments/device_profile.py: kernel counts, busy time and kinds from a trace's device plane."""

import dataclasses

import pytest

from experiments import device_profile


@dataclasses.dataclass
class Event:
  name: str
  start_ns: float
  duration_ns: float

  @property
  def end_ns(self):
    return self.start_ns + self.duration_ns


@dataclasses.dataclass
class Line:
  name: str
  events: list


@dataclasses.dataclass
class Plane:
  name: str
  lines: list


@dataclasses.dataclass
class Profile:
  planes: list


def _gpu_profile():
  stream = Line("Stream #13(Compute)", [
      Event("loop_add_fusion_3", 0, 1000),  # XLA's kernel
      Event("sm90_xmma_fprop_implicit_gemm_bf16", 500, 2500),  # cuDNN, overlapping the first
      Event("MemcpyD2D", 4000, 500),
      Event("loop_add_fusion_3", 6000, 1000),
  ])
  derived = Line("XLA Ops", [Event("fusion.3", 0, 9000)])  # a summary line: not counted
  return Profile([Plane("/host:CPU", [Line("python", [Event("step", 0, 10_000)])]),
                  Plane("/device:GPU:0", [derived, stream])])


def test_counts_stream_kernels_per_step_and_their_union():
  s = device_profile.summarize(_gpu_profile(), steps=2, wall_seconds=20e-6)
  assert s["device_plane"] == "/device:GPU:0"
  assert s["kernels_per_step"] == 2.0  # 4 launches over 2 steps; the XLA Ops line is left out
  assert s["kernel_ms_per_step"] == pytest.approx(5000 / 2 / 1e6)
  # Busy: [0, 3000) + [4000, 4500) + [6000, 7000) = 4500 ns, the overlap counted once.
  assert s["busy_ms_per_step"] == pytest.approx(4500 / 2 / 1e6)
  assert s["idle_fraction"] == pytest.approx(1 - 4500 / 20_000)
  assert s["by_kind"]["xla"] == {"launches_per_step": 1.0, "ms_per_step": pytest.approx(2000 / 2 / 1e6)}
  assert s["by_kind"]["library"]["launches_per_step"] == 0.5
  assert s["by_kind"]["copy"]["launches_per_step"] == 0.5
  assert s["top"][0]["name"] == "sm90_xmma_fprop_implicit_gemm_bf16"
  assert s["kernels"]["loop_add_fusion_3"] == [1.0, pytest.approx(1000 / 1e6)]


def test_without_a_device_plane_says_so():
  s = device_profile.summarize(Profile([Plane("/host:CPU", [])]), steps=1, wall_seconds=1.0)
  assert s["device_plane"] is None and s["planes"] == ["/host:CPU"]
  assert "| row | no device trace |" in device_profile.format_profile({"row": s})


def test_kernel_kinds():
  assert device_profile.kernel_kind("input_reduce_fusion_12") == "xla"
  assert device_profile.kernel_kind("wrapped_transpose") == "xla"
  assert device_profile.kernel_kind("cutlass_80_tensorop_s1688gemm_64x64") == "library"
  assert device_profile.kernel_kind("MemcpyDtoD") == "copy"
