"""Refuses bad configs before any work starts, with one readable line (`UserError`, exit 2)."""

import math
import os

import ml_collections

from pah_jax import data as data_lib
from pah_jax.errors import UserError

# The keys of pah_jax.methods.BUILDERS (kept here so checks run before JAX is imported).
METHODS = ("pah", "hnet", "finetune", "joint", "lwf", "ewc", "si", "agem", "derpp")
DATASETS = ("cifar100", "tiny_imagenet", "fashion_mnist", "npz")

_CHOICES = {
    "method": METHODS,
    "data.name": DATASETS,
    "data.class_order": ("sequential", "random"),
    "data.normalization": ("dataset", "half"),
    "model.stem": ("cifar", "imagenet"),
    "model.conv_init": ("torchvision", "pytorch"),
    "model.small_map_convs": ("matmul", "conv"),
    "model.batch_norm": ("running", "batch"),
    "model.teacher_batch_norm": ("", "running", "batch"),
    "model.prototype_batch_norm": ("", "running", "batch"),
    "model.eval_batch_norm": ("", "running", "batch"),
    "joint.eval_batch_norm": ("", "running", "batch"),
    "model.dtype": ("float32", "bfloat16"),
    "hypernet.activation": ("leaky_relu", "relu", "gelu"),
    "pah.prototype_init": ("semantic", "random"),
    "pah.semantic_init": ("resize", "crop"),
    "pah.prototype_channels": (0, 1, 3),
    "pah.kl_direction": ("old_new", "new_old"),
    "pah.old_task_reduction": ("mean", "sum"),
    "pah.prototype_update": ("masked", "official"),
    "train.loop": ("auto", "compiled", "python"),
    "train.eval_accuracy": ("examples", "batch_mean"),
}

# key: (lowest allowed, highest allowed or None, lowest excluded?)
_RANGES = {
    "seed": (0, None, False),
    "data.num_tasks": (1, None, False),
    "data.max_train_per_task": (0, None, False),
    "data.max_test_per_task": (0, None, False),
    "model.width": (0.0, 64.0, True),
    "hypernet.hidden": (1, None, False),
    "hypernet.layers": (0, None, False),
    "hypernet.last_layer_scale": (0.0, None, True),
    "pah.prototype_size": (1, 512, False),
    "pah.random_init_std": (0.0, None, False),
    "pah.lambda_sm": (0.0, None, False),
    "pah.lambda_sp": (0.0, None, False),
    "pah.lambda_hp": (0.0, None, False),
    "pah.temperature": (0.0, None, True),
    "optim.lr_backbone": (0.0, None, True),
    "optim.lr_hypernet": (0.0, None, True),
    "optim.lr_prototypes": (0.0, None, True),
    "optim.lr_heads": (0.0, None, True),
    "optim.weight_decay": (0.0, None, False),
    "hnet.embedding_dim": (0, None, False),
    "hnet.output_reg": (0.0, None, False),
    "lwf.alpha": (0.0, None, False),
    "lwf.temperature": (0.0, None, True),
    "ewc.strength": (0.0, None, False),
    "ewc.gamma": (0.0, 1.0, False),
    "ewc.fisher_samples": (1, None, False),
    "ewc.fisher_batch": (1, None, False),
    "si.strength": (0.0, None, False),
    "si.damping": (0.0, None, True),
    "agem.memory_size": (1, None, False),
    "agem.memory_batch": (1, None, False),
    "derpp.buffer_size": (1, None, False),
    "derpp.alpha": (0.0, None, False),
    "derpp.beta": (0.0, None, False),
    "derpp.buffer_batch": (1, None, False),
    "train.epochs": (1, 10_000, False),
    "train.batch_size": (1, 65_536, False),
    "train.eval_batch_size": (1, 65_536, False),
    "train.log_every_steps": (1, None, False),
    "train.keep_checkpoints": (1, None, False),
    "train.parallel_seeds": (1, 1024, False),
    "train.checkpoint_every_steps": (0, None, False),
}

# Keys that may differ between the run that wrote a checkpoint and the run resuming it.
RESUME_FREE_KEYS = ("train.log_every_steps", "train.parallel_seeds", "train.keep_checkpoints",
                    "train.checkpoint_every_steps", "train.loop", "train.compilation_cache", "data.path",
                    "data.download")

# Keys added after checkpoints were written, with the value that reproduces what those runs
# did: a saved config without the key counts as having that value.
ADDED_KEYS = {"pah.lambda_hp": 0.0, "model.conv_init": "torchvision", "joint.eval_batch_norm": "",
              "train.compilation_cache": "", "model.small_map_convs": "conv"}


# Keys only some methods read. A workdir may be resumed, or its results re-read, under a config
# that differs only in keys its method never reads: retuning the hypernetwork's learning rate
# leaves the finished runs of the stored-head baselines valid.
_METHOD_ONLY = ("pah", "hypernet", "hnet", "joint", "lwf", "ewc", "si", "agem", "derpp",
                "optim.lr_hypernet", "optim.lr_prototypes", "optim.lr_heads")
_HYPERNET_KEYS = ("pah", "hypernet", "optim.lr_hypernet", "optim.lr_prototypes")
_READS = {"pah": _HYPERNET_KEYS, "hnet": _HYPERNET_KEYS + ("hnet",), "finetune": ("optim.lr_heads",),
          "joint": ("joint", "optim.lr_heads"), "lwf": ("lwf", "optim.lr_heads"), "ewc": ("ewc", "optim.lr_heads"),
          "si": ("si", "optim.lr_heads"), "agem": ("agem", "optim.lr_heads"), "derpp": ("derpp", "optim.lr_heads")}


def _under(key: str, prefixes) -> bool:
  return any(key == p or key.startswith(p + ".") for p in prefixes)


def unread_by(method: str, key: str) -> bool:
  """Whether method `method` never reads config key `key` (dotted)."""
  return method in _READS and _under(key, _METHOD_ONLY) and not _under(key, _READS[method])


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      raise UserError(f"config has no key {dotted}: start from configs/default.py")
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict) -> None:
  for key, choices in _CHOICES.items():
    value = _get(config, key)
    if value not in choices:
      raise UserError(f"config {key}={value!r} is not one of {', '.join(map(repr, choices))}")
  for key, (low, high, exclusive) in _RANGES.items():
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      raise UserError(f"config {key}={value!r} must be a finite number")
    if (value <= low if exclusive else value < low) or (high is not None and value > high):
      bound = f"> {low}" if exclusive else f">= {low}"
      bound += f" and <= {high}" if high is not None else ""
      raise UserError(f"config {key}={value!r} is out of range: it must be {bound}")
  pah = config.pah
  if pah.prototype_init == "semantic" and pah.semantic_init == "crop" and pah.prototype_channels == 3:
    raise UserError("config pah.semantic_init=crop makes grey prototypes: set pah.prototype_channels=1 (or 0)")
  if not isinstance(config.model.pretrained, str):
    raise UserError(f"config model.pretrained={config.model.pretrained!r} must be a file path or empty")
  if not isinstance(config.train.compilation_cache, str):
    raise UserError(f"config train.compilation_cache={config.train.compilation_cache!r} must be a directory "
                    "or empty (off)")
  if config.model.pretrained and not os.path.isfile(config.model.pretrained):
    raise UserError(f"config model.pretrained={config.model.pretrained}: no such file "
                    "(convert torchvision weights with experiments/convert_torchvision.py)")
  if config.method == "agem" and config.agem.memory_size < config.data.num_tasks:
    raise UserError(f"config agem.memory_size={config.agem.memory_size} must be at least data.num_tasks="
                    f"{config.data.num_tasks}: the memory holds an equal share of every task")
  data_lib.check_config(config.data, config.seed)


def check_against_data(config: ml_collections.ConfigDict, tasks) -> None:
  """Checks that need the data's sizes: batches per task, crop size versus image size."""
  smallest = min(len(t.y_train) for t in tasks.tasks)
  if config.train.batch_size > smallest:
    raise UserError(f"config train.batch_size={config.train.batch_size} is larger than the smallest task's "
                    f"{smallest} training images: lower train.batch_size or raise data.max_train_per_task")
  h, w, _ = tasks.image_shape
  p = config.pah
  if p.prototype_init == "semantic" and p.semantic_init == "crop" and p.prototype_size > min(h, w):
    raise UserError(f"config pah.prototype_size={p.prototype_size} is larger than the {h}x{w} images "
                    "the crop init cuts it from: lower pah.prototype_size")


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


def check_same_config(saved: dict, config: ml_collections.ConfigDict) -> None:
  """Refuses to resume a workdir whose checkpoint was written under another config."""
  from pah_jax import reporting  # only for its JSON conversion of the config

  old, new = {**ADDED_KEYS, **_flatten(saved)}, _flatten(reporting.jsonable(config))
  differ = sorted(k for k in set(old) | set(new) if k not in RESUME_FREE_KEYS and old.get(k) != new.get(k)
                  and not unread_by(new.get("method", "pah"), k))
  if differ:
    shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in differ[:6])
    raise UserError(f"workdir was written with another config: {shown}; use a new --workdir or the same config")
