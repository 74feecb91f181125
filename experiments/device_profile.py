"""Where a jitted program's device time goes: kernels per step, busy time, launch gaps.

`profile(run, sync, steps)` runs `run()` (which advances `steps` training steps) under
`jax.profiler.trace` and reads the trace back with `jax.profiler.ProfileData` (no TensorBoard
needed). On a GPU every kernel and copy of the device's stream lines is counted:

  kernels_per_step    launches per training step (a launch-bound program pays per launch)
  kernel_ms_per_step  the kernels' summed durations
  busy_ms_per_step    the union of their intervals (the device doing anything)
  wall_ms_per_step    host wall time of the profiled run, sync included
  idle_fraction       1 - busy / wall: the share lost to launch gaps and host work
  by_kind             launches and ms per step of XLA's own kernels (fusions), library kernels
                      (cuDNN convolutions, cuBLAS/cuDNN matrix products) and copies
  top                 the costliest kernels (name, launches and ms per step)
  kernels             every kernel name: [launches, ms] per step

On a CPU the trace holds no device plane and the summary says so.
"""

import collections
import glob
import os
import tempfile
import time

DEVICE_PLANE_PREFIXES = ("/device:GPU", "/device:TPU")


def _device_planes(profile_data):
  return [p for p in profile_data.planes if p.name.startswith(DEVICE_PLANE_PREFIXES)]


def _stream_lines(plane):
  """The lines of real device activity (CUDA streams; TPU: XLA Ops), not derived summaries."""
  lines = [line for line in plane.lines if line.name.startswith("Stream")]
  return lines or [line for line in plane.lines if line.name == "XLA Ops"]


def kernel_kind(name: str) -> str:
  """"copy", "xla" (a kernel XLA generated: its names say fusion) or "library" (cuDNN, cuBLAS)."""
  low = name.lower()
  if "memcpy" in low or "memset" in low:
    return "copy"
  if "fusion" in low or low.startswith(("wrapped_", "loop_", "input_", "copy", "transpose", "reduce")):
    return "xla"
  return "library"


def _union_ns(intervals) -> float:
  total, end = 0.0, float("-inf")
  for start, stop in sorted(intervals):
    if stop > end:
      total += stop - max(start, end)
      end = stop
  return total


def summarize(profile_data, steps: int, wall_seconds: float, top: int = 12) -> dict:
  """Per-step kernel statistics of the first device plane of a trace (see module doc)."""
  planes = _device_planes(profile_data)
  if not planes:
    return {"device_plane": None, "planes": [p.name for p in profile_data.planes]}
  plane = planes[0]
  per_name = collections.defaultdict(lambda: [0, 0.0])
  intervals = []
  for line in _stream_lines(plane):
    for event in line.events:
      intervals.append((event.start_ns, event.end_ns))
      entry = per_name[event.name]
      entry[0] += 1
      entry[1] += event.duration_ns
  kernel_ns = sum(ns for _, ns in per_name.values())
  busy_ns = _union_ns(intervals)
  wall_ns = wall_seconds * 1e9
  ranked = sorted(per_name.items(), key=lambda kv: -kv[1][1])[:top]
  kinds = collections.defaultdict(lambda: [0, 0.0])
  for name, (count, ns) in per_name.items():
    kinds[kernel_kind(name)][0] += count
    kinds[kernel_kind(name)][1] += ns
  return {
      "device_plane": plane.name, "lines": [line.name for line in plane.lines], "steps": steps,
      "kernels_per_step": len(intervals) / steps, "kernel_ms_per_step": kernel_ns / steps / 1e6,
      "busy_ms_per_step": busy_ns / steps / 1e6, "wall_ms_per_step": wall_ns / steps / 1e6,
      "idle_fraction": max(0.0, 1.0 - busy_ns / wall_ns) if wall_ns else None,
      "by_kind": {kind: {"launches_per_step": count / steps, "ms_per_step": ns / steps / 1e6}
                  for kind, (count, ns) in sorted(kinds.items())},
      "top": [{"name": name[:120], "launches_per_step": count / steps, "ms_per_step": ns / steps / 1e6}
              for name, (count, ns) in ranked],
      "kernels": {name: [count / steps, ns / steps / 1e6] for name, (count, ns) in per_name.items()},
  }


def profile(run, sync, steps: int, top: int = 12) -> dict:
  """Traces one call of `run` (then `sync`) and summarises the device plane."""
  import jax

  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir):
      t0 = time.perf_counter()
      run()
      sync()
      wall = time.perf_counter() - t0
    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not files:
      return {"device_plane": None, "error": "no trace written"}
    return summarize(jax.profiler.ProfileData.from_file(files[0]), steps, wall, top)


def format_profile(rows: dict) -> str:
  """A table of the per-row summaries, then each row's costliest kernels."""
  lines = ["| row | kernels / step | kernel ms | busy ms | wall ms | idle |", "|---|---:|---:|---:|---:|---:|"]
  for name, s in rows.items():
    if not s.get("device_plane"):
      lines.append(f"| {name} | no device trace | | | | |")
      continue
    lines.append(f"| {name} | {s['kernels_per_step']:.0f} | {s['kernel_ms_per_step']:.3f} | "
                 f"{s['busy_ms_per_step']:.3f} | {s['wall_ms_per_step']:.3f} | {s['idle_fraction']:.0%} |")
  for name, s in rows.items():
    kinds = ", ".join(f"{kind} {v['launches_per_step']:.0f} launches {v['ms_per_step']:.3f} ms"
                      for kind, v in s.get("by_kind", {}).items())
    if kinds:
      lines.append(f"  {name}: {kinds}")
    for k in s.get("top", []):
      lines.append(f"  {name}: {k['ms_per_step']:.3f} ms, {k['launches_per_step']:.1f}x  {k['name']}")
  return "\n".join(lines)
