"""torchvision ResNet-18 state dicts into the Flax backbone (pah_jax.pretrained).

The state dicts are built here from torchvision's architecture (resnet.py: conv1 7x7/2,
bn1, max-pool 3x3/2, BasicBlocks with a 1x1 conv + BN downsample where the stride or the
width changes), independently of pah_jax, and the Flax forward is compared with a plain-numpy
forward of the same state dict. Width 1.0 is only traced (jax.eval_shape); the forward runs
at width 0.125.
"""

import json
import struct
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import convert_torchvision
from pah_jax import models
from pah_jax import pretrained
from pah_jax.errors import UserError

EPS = 1e-5  # torch.nn.BatchNorm2d's default


def torchvision_shapes(width: float = 1.0) -> dict[str, tuple[int, ...]]:
  """Every tensor of torchvision's resnet18().state_dict(), at a width factor."""
  chans = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
  shapes = {"conv1.weight": (chans[0], 3, 7, 7)}

  def bn(prefix, ch):
    shapes.update({f"{prefix}.weight": (ch,), f"{prefix}.bias": (ch,), f"{prefix}.running_mean": (ch,),
                   f"{prefix}.running_var": (ch,), f"{prefix}.num_batches_tracked": ()})

  bn("bn1", chans[0])
  cin = chans[0]
  for s, ch in enumerate(chans, start=1):
    for b in range(2):
      p = f"layer{s}.{b}"
      shapes[f"{p}.conv1.weight"] = (ch, cin, 3, 3)
      bn(f"{p}.bn1", ch)
      shapes[f"{p}.conv2.weight"] = (ch, ch, 3, 3)
      bn(f"{p}.bn2", ch)
      if (s > 1 and b == 0) or cin != ch:
        shapes[f"{p}.downsample.0.weight"] = (ch, cin, 1, 1)
        bn(f"{p}.downsample.1", ch)
      cin = ch
  shapes["fc.weight"], shapes["fc.bias"] = (1000, chans[3]), (1000,)
  return shapes


def random_state_dict(width: float, seed: int = 0) -> dict[str, np.ndarray]:
  """He-normal convolutions; BatchNorm affine and running statistics far from (1, 0, 0, 1)."""
  rng = np.random.default_rng(seed)
  sd = {}
  for name, shape in torchvision_shapes(width).items():
    if name.endswith("num_batches_tracked"):
      sd[name] = np.array(1234, np.int64)
    elif len(shape) == 4:
      sd[name] = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape).astype(np.float32)
    elif name.endswith(("running_var", ".weight")) and not name.startswith("fc"):
      sd[name] = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    else:  # BN bias and running mean, fc
      sd[name] = rng.normal(0, 0.3, shape).astype(np.float32)
  return sd


# --------------------------------------------------------------------------- numpy reference


def _conv(x, w, stride, pad):
  """x (N, H, W, I), w (O, I, kh, kw) as torch.nn.Conv2d(bias=False): explicit padding, im2col."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(1, 2))[:, ::stride, ::stride]
  return np.einsum("nhwcij,ocij->nhwo", windows, w)


def _bn(x, sd, p):
  return (x - sd[f"{p}.running_mean"]) / np.sqrt(sd[f"{p}.running_var"] + EPS) * sd[f"{p}.weight"] + sd[f"{p}.bias"]


def _max_pool(x):  # nn.MaxPool2d(3, 2, 1): padding never wins the max
  x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
  return np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))


def reference_features(sd, x):
  """torchvision ResNet-18 in eval mode up to the global average pool, in float64 numpy."""
  sd = {k: np.asarray(v, np.float64) for k, v in sd.items()}
  relu = lambda v: np.maximum(v, 0.0)
  x = _max_pool(relu(_bn(_conv(x.astype(np.float64), sd["conv1.weight"], 2, 3), sd, "bn1")))
  for s in range(1, 5):
    for b in range(2):
      p = f"layer{s}.{b}"
      stride = 2 if s > 1 and b == 0 else 1
      y = relu(_bn(_conv(x, sd[f"{p}.conv1.weight"], stride, 1), sd, f"{p}.bn1"))
      y = _bn(_conv(y, sd[f"{p}.conv2.weight"], 1, 1), sd, f"{p}.bn2")
      if f"{p}.downsample.0.weight" in sd:
        x = _bn(_conv(x, sd[f"{p}.downsample.0.weight"], stride, 0), sd, f"{p}.downsample.1")
      x = relu(x + y)
  return x.mean(axis=(1, 2))


# --------------------------------------------------------------------------- helpers


def _abstract(width, stem="imagenet"):
  net = models.ResNet18(width=width, stem=stem)
  x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  v = jax.eval_shape(lambda k, x: net.init(k, x, train=False), jax.random.PRNGKey(0), x)
  return net, v["params"], v["batch_stats"]


def _write_safetensors(path, sd):
  """The safetensors format by hand: u64 header length, JSON header, raw little-endian data."""
  header, blobs, offset = {}, [], 0
  for name, a in sd.items():
    a = np.ascontiguousarray(a, np.float32)
    header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
    blobs.append(a.tobytes())
    offset += a.nbytes
  text = json.dumps(header).encode()
  text += b" " * (-len(text) % 8)
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


# --------------------------------------------------------------------------- tests


def test_flax_forward_matches_numpy_reference(tmp_path):
  sd = random_state_dict(0.125)
  path = tmp_path / "resnet18_small.npz"
  np.savez(path, **sd)
  net, params_t, stats_t = _abstract(0.125)
  params, batch_stats = pretrained.load_into(params_t, stats_t, str(path))
  x = np.random.default_rng(1).normal(0, 1, (2, 32, 32, 3)).astype(np.float32)
  forward = jax.jit(lambda v, x: net.apply(v, x, train=False))  # eval mode: running statistics
  got = np.asarray(forward({"params": params, "batch_stats": batch_stats}, x))
  want = reference_features(sd, x)
  assert got.shape == want.shape == (2, 64)
  assert np.abs(want).max() > 0.1  # a non-degenerate comparison
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_full_width_mapping_covers_torchvision_resnet18():
  """Every torchvision tensor but fc.* and num_batches_tracked has a place of the same shape."""
  _, params_t, stats_t = _abstract(1.0)
  shapes = torchvision_shapes(1.0)
  kept = {k: v for k, v in shapes.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
  assert pretrained.expected_shapes(params_t, stats_t) == kept
  sd = {k: np.zeros(v, np.float32) for k, v in shapes.items()}
  params, batch_stats = pretrained.convert(sd, params_t, stats_t)
  assert jax.tree_util.tree_map(lambda a: a.shape, params) == jax.tree_util.tree_map(lambda a: a.shape, params_t)
  assert sum(a.size for a in jax.tree_util.tree_leaves(params)) == 11_689_512 - 513_000  # resnet18 minus fc
  assert sum(a.size for a in jax.tree_util.tree_leaves(batch_stats)) == 2 * 4_800  # mean+var of 20 BNs
  assert params["layer2_0"]["downsample_conv"]["kernel"].shape == (1, 1, 64, 128)  # OIHW -> HWIO


def test_wrong_shape_missing_and_extra_tensors_are_user_errors():
  _, params_t, stats_t = _abstract(0.125)
  good = random_state_dict(0.125)
  bad = dict(good, **{"layer3.0.conv2.weight": np.zeros((32, 32, 1, 1), np.float32)})
  with pytest.raises(UserError, match=r"layer3.0.conv2.weight has shape \(32, 32, 1, 1\) but the model needs "
                     r"\(32, 32, 3, 3\)"):
    pretrained.convert(bad, params_t, stats_t)
  missing = {k: v for k, v in good.items() if k != "layer2.0.downsample.1.running_var"}
  with pytest.raises(UserError, match="lack 1 backbone tensor.*layer2.0.downsample.1.running_var"):
    pretrained.convert(missing, params_t, stats_t)
  extra = dict(good, **{"layer1.0.conv3.weight": np.zeros((8, 8, 1, 1), np.float32)})
  with pytest.raises(UserError, match="no place for: layer1.0.conv3.weight"):
    pretrained.convert(extra, params_t, stats_t)
  # Wrapper prefixes and nesting from training checkpoints are undone.
  wrapped = {"state_dict": {f"module.{k}": v for k, v in good.items()}}
  pretrained.convert(wrapped, params_t, stats_t)


def test_load_from_config_hook(tmp_path):
  path = tmp_path / "w.npz"
  np.savez(path, **random_state_dict(0.125))
  _, params_t, stats_t = _abstract(0.125)
  params = {"backbone": jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), params_t),
            "hypernet": {"w": jnp.ones(3)}, "prototypes": jnp.ones(2)}
  stats = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), stats_t)
  model = ml_collections.ConfigDict({"width": 0.125, "stem": "imagenet", "pretrained": ""})
  assert pretrained.load_from_config(model, params, stats) == (params, stats)  # "" = train from scratch
  model.pretrained = str(path)
  new_params, new_stats = pretrained.load_from_config(model, params, stats)
  assert new_params["hypernet"] is params["hypernet"] and new_params["prototypes"] is params["prototypes"]
  np.testing.assert_array_equal(new_stats["bn1"]["var"], np.load(path)["bn1.running_var"])
  model.stem = "cifar"  # a 3x3 stem cannot take torchvision's 7x7 conv1
  _, params_t, stats_t = _abstract(0.125, "cifar")
  with pytest.raises(UserError, match=r"conv1.weight has shape \(8, 3, 7, 7\).*need model.width=1.0 and "
                     r"model.stem=imagenet \(this config: model.width=0.125, model.stem=cifar\)"):
    pretrained.load_from_config(model, {"backbone": params_t}, stats_t)


def test_file_formats(tmp_path, monkeypatch):
  sd = {k: v for k, v in random_state_dict(0.125).items() if v.dtype == np.float32}
  with pytest.raises(UserError, match="not found"):
    pretrained.read_state_dict(str(tmp_path / "absent.npz"))
  (tmp_path / "w.h5").write_bytes(b"x")
  with pytest.raises(UserError, match=r"unknown file type \.h5"):
    pretrained.read_state_dict(str(tmp_path / "w.h5"))
  (tmp_path / "broken.npz").write_bytes(b"not a zip")
  with pytest.raises(UserError, match="cannot read .*broken.npz"):
    pretrained.read_state_dict(str(tmp_path / "broken.npz"))

  st = tmp_path / "w.safetensors"
  _write_safetensors(st, sd)
  try:
    import safetensors.numpy  # noqa: F401  (skip below when safetensors is absent)
    loaded = pretrained.read_state_dict(str(st))
    assert loaded.keys() == sd.keys() and all(np.array_equal(loaded[k], sd[k]) for k in sd)
  except ImportError:
    pass
  monkeypatch.setitem(sys.modules, "safetensors", None)  # makes the import fail
  monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
  with pytest.raises(UserError, match="needs the safetensors package"):
    pretrained.read_state_dict(str(st))

  pth = tmp_path / "w.pth"
  pth.write_bytes(b"")
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(UserError, match="needs PyTorch.*-m experiments.convert_torchvision"):
    pretrained.read_state_dict(str(pth))


def test_pth_read_with_torch_when_installed(tmp_path):
  torch = pytest.importorskip("torch")  # CI has no PyTorch
  sd = random_state_dict(0.125)
  path = tmp_path / "w.pth"
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
  loaded = pretrained.read_state_dict(str(path))
  assert loaded.keys() == sd.keys() and all(np.array_equal(loaded[k], sd[k]) for k in sd)


def test_converter_command(tmp_path, capsys):
  sd = random_state_dict(0.125)
  src, dst = tmp_path / "in.npz", tmp_path / "out" / "resnet18.npz"
  np.savez(src, **{f"module.{k}": v.astype(np.float64) if v.ndim else v for k, v in sd.items()})
  assert convert_torchvision.main([str(src), str(dst), "--width", "0.125"]) == 0
  assert "--config.model.pretrained=" in capsys.readouterr().out
  with np.load(dst) as out:
    assert set(out.files) == {k for k in sd if not k.startswith("fc.") and "num_batches" not in k}
    assert all(out[k].dtype == np.float32 and np.allclose(out[k], sd[k]) for k in out.files)
  assert convert_torchvision.main([str(src), str(tmp_path / "o.npz")]) == 2  # width 1.0 expected
  assert "model.width=1.0" in capsys.readouterr().err
