"""ImageNet-pretrained backbones: torchvision ResNet-18 state dicts into `models.ResNet`.

A torchvision state dict names every tensor after the PyTorch module tree
(`layer2.0.downsample.1.running_var`); `models.ResNet` names the same tensors after the
Flax module tree (`params/layer2_0/downsample_bn/scale`, `batch_stats/.../var`). The mapping
is derived from the target pytrees, never from a fixed list, so it holds for any width and
stage sizes (the tests convert a width-0.125 model), and every tensor is checked against the
shape the model needs.

  torchvision                          Flax (params | batch_stats)
  conv1.weight (O, I, H, W)            params conv1/kernel (H, W, I, O)
  bn1.weight / bn1.bias                params bn1/scale / bn1/bias
  bn1.running_mean / running_var       batch_stats bn1/mean / bn1/var
  layer{s}.{b}.conv1 ... bn2           layer{s}_{b}/conv1 ... bn2
  layer{s}.{b}.downsample.0 / .1       layer{s}_{b}/downsample_conv / downsample_bn
  fc.*, *.num_batches_tracked          ignored (PAH generates its heads)

BatchNorm: torchvision uses eps 1e-5 as `models.ResNet` does; `running_var` is the unbiased
variance, which PyTorch's eval-mode forward divides by as is, so it is copied unchanged.

Files: `.pth`/`.pt` (read with PyTorch, only when it is installed), `.npz` (keys are the
torchvision names; `experiments/convert_torchvision.py` writes one from a `.pth` once) and
`.safetensors` (read with the `safetensors` package).
"""

from collections.abc import Mapping
import os
from typing import Any

import flax
import jax.numpy as jnp
import numpy as np

from pah_jax.errors import UserError

# Tensors of a torchvision ResNet that the backbone has no place for, by design.
_IGNORED_PREFIXES = ("fc.",)
_IGNORED_SUFFIXES = (".num_batches_tracked",)
# Wrappers that prefix every key: DataParallel / DistributedDataParallel, torch.compile.
_KEY_PREFIXES = ("module.", "_orig_mod.")
# Checkpoint dicts that hold the state dict under one of these keys.
_NESTED_KEYS = ("state_dict", "model", "model_state_dict")

_LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_MODULE_NAMES = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}

SUFFIXES = (".pth", ".pt", ".npz", ".safetensors")


def torch_name(collection: str, path: tuple[str, ...]) -> str:
  """torchvision's key of the Flax leaf `path` of `collection` ("params" or "batch_stats").

  ("params", ("layer2_0", "downsample_conv", "kernel")) -> "layer2.0.downsample.0.weight".
  """
  *modules, leaf = path
  parts = []
  for m in modules:
    if m in _MODULE_NAMES:
      parts.append(_MODULE_NAMES[m])
    elif m.startswith("layer") and "_" in m:  # Flax "layer{s}_{b}" is torchvision "layer{s}.{b}"
      parts.append(m.replace("_", "."))
    else:
      parts.append(m)
  if (collection, leaf) not in _LEAF_NAMES:
    raise ValueError(f"no torchvision name for {collection}/{'/'.join(path)}")
  return ".".join(parts + [_LEAF_NAMES[(collection, leaf)]])


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  """Flax conv kernels are HWIO, torch weights OIHW; every other leaf has the same shape."""
  if len(flax_shape) == 4:
    h, w, i, o = flax_shape
    return (o, i, h, w)
  return tuple(flax_shape)


def _to_flax(array: np.ndarray) -> np.ndarray:
  return np.transpose(array, (2, 3, 1, 0)) if array.ndim == 4 else array


def _targets(params, batch_stats) -> dict[str, tuple[str, tuple[str, ...], Any]]:
  """torchvision name -> (collection, Flax path, target leaf) for every backbone leaf."""
  out = {}
  for collection, tree in (("params", params), ("batch_stats", batch_stats)):
    for path, leaf in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree)).items():
      out[torch_name(collection, path)] = (collection, path, leaf)
  return out


def expected_shapes(params, batch_stats) -> dict[str, tuple[int, ...]]:
  """torchvision name -> the shape (torch layout) the backbone needs, for every backbone leaf.

  `params`/`batch_stats` may be abstract (`jax.eval_shape`): only shapes are read.
  """
  return {name: _torch_shape(tuple(leaf.shape)) for name, (_, _, leaf) in _targets(params, batch_stats).items()}


def strip_wrappers(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """The bare state dict: unnested from a training checkpoint, wrapper prefixes removed."""
  for nested in _NESTED_KEYS:  # a training checkpoint rather than a bare state dict
    if isinstance(state_dict.get(nested), Mapping):
      state_dict = state_dict[nested]
      break
  out = {}
  for key, value in state_dict.items():
    for prefix in _KEY_PREFIXES:
      if key.startswith(prefix):
        key = key[len(prefix):]
    out[key] = value
  return out


def _ignored(name: str) -> bool:
  return name.startswith(_IGNORED_PREFIXES) or name.endswith(_IGNORED_SUFFIXES)


def _listing(names, limit: int = 4) -> str:
  names = sorted(names)
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def convert(state_dict: Mapping[str, Any], params, batch_stats, *, source: str = "state dict",
            hint: str = "") -> tuple[dict, dict]:
  """torchvision ResNet state dict -> (backbone params, backbone batch_stats) like the targets.

  Args:
    state_dict: torchvision key -> array (numpy, or anything `np.asarray` reads).
    params, batch_stats: the backbone's Flax pytrees (real or `jax.eval_shape` results): they
      give the names, shapes and dtypes the result must have.
    source: what the state dict came from, for error messages.
    hint: appended to shape errors (e.g. which model settings torchvision weights need).

  Raises:
    UserError: a backbone tensor is missing, has another shape, or the state dict has
      tensors that belong to no ResNet-18 layer (another architecture).
  """
  sd = strip_wrappers(state_dict)
  targets = _targets(params, batch_stats)
  missing = [name for name in targets if name not in sd]
  if missing:
    raise UserError(f"pretrained weights {source} lack {len(missing)} backbone tensor(s): {_listing(missing)}; "
                    "expected a torchvision ResNet-18 state dict")
  unexpected = [name for name in sd if name not in targets and not _ignored(name)]
  if unexpected:
    raise UserError(f"pretrained weights {source} have tensors the ResNet-18 backbone has no place for: "
                    f"{_listing(unexpected)}; expected a torchvision ResNet-18 state dict")
  out = {"params": {}, "batch_stats": {}}
  for name, (collection, path, leaf) in targets.items():
    array = np.asarray(sd[name])
    want = _torch_shape(tuple(leaf.shape))
    if array.shape != want:
      raise UserError(f"pretrained weights {source}: {name} has shape {array.shape} but the model needs {want}"
                      + (f"; {hint}" if hint else ""))
    if not np.issubdtype(array.dtype, np.floating):
      raise UserError(f"pretrained weights {source}: {name} has dtype {array.dtype}, expected floating point")
    out[collection][path] = jnp.asarray(_to_flax(array).astype(np.float32), dtype=leaf.dtype)
  return (flax.traverse_util.unflatten_dict(out["params"]),
          flax.traverse_util.unflatten_dict(out["batch_stats"]))


# --------------------------------------------------------------------------- files


def _read_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"reading {path} needs PyTorch (pip install torch); or convert it once where PyTorch "
                    f"is installed: python -m experiments.convert_torchvision {path} weights.npz, "
                    "and pass the .npz") from None
  try:
    # weights_only: a state dict holds tensors only, and unpickling anything else runs code.
    loaded = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"cannot read {path} with torch.load: {type(e).__name__}: {e}") from None
  if not isinstance(loaded, Mapping):
    raise UserError(f"{path} holds a {type(loaded).__name__}, not a state dict")
  loaded = strip_wrappers(loaded)
  out = {}
  for key, value in loaded.items():
    if isinstance(value, torch.Tensor):
      value = value.detach().cpu()
      # numpy has no bfloat16: widen every floating tensor, float32 is what the model uses.
      out[key] = (value.float() if value.is_floating_point() else value).numpy()
  return out


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  try:
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"reading {path} needs the safetensors package (pip install safetensors); "
                    "or pass the weights as .npz") from None
  try:
    return dict(load_file(path))
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"cannot read {path} as safetensors: {type(e).__name__}: {e}") from None


def _read_npz(path: str) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as f:
      return {key: f[key] for key in f.files}
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"cannot read {path} as .npz: {type(e).__name__}: {e}") from None


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A torchvision state dict from `.pth`/`.pt`, `.npz` or `.safetensors` as numpy arrays."""
  if not os.path.isfile(path):
    raise UserError(f"pretrained weights file {path} not found")
  suffix = os.path.splitext(path)[1].lower()
  if suffix in (".pth", ".pt"):
    return _read_torch(path)
  if suffix == ".npz":
    return _read_npz(path)
  if suffix == ".safetensors":
    return _read_safetensors(path)
  raise UserError(f"pretrained weights {path}: unknown file type {suffix or '(none)'}; "
                  f"expected one of {', '.join(SUFFIXES)}")


def load_into(params, batch_stats, path: str, *, hint: str = "") -> tuple[dict, dict]:
  """The backbone's (params, batch_stats) with every tensor replaced by the file's."""
  return convert(read_state_dict(path), params, batch_stats, source=path, hint=hint)


def load_from_config(model_config, params: dict, batch_stats) -> tuple[dict, Any]:
  """`create_state`'s hook: loads `model.pretrained` into the backbone, if it names a file.

  `params` is the whole parameter dict ({"backbone", "hypernet", "prototypes"}); only its
  backbone and `batch_stats` (the backbone's running statistics) change. The hypernetwork
  and prototypes keep their fresh values: PAH's heads are generated, never pretrained.
  """
  path = model_config.get("pretrained", "") if hasattr(model_config, "get") else ""
  if not path:
    return params, batch_stats
  hint = ("torchvision's ResNet-18 weights need model.width=1.0 and model.stem=imagenet "
          f"(this config: model.width={model_config.width}, model.stem={model_config.stem})")
  backbone, batch_stats = load_into(params["backbone"], batch_stats, path, hint=hint)
  return {**params, "backbone": backbone}, batch_stats
