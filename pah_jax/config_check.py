"""Refuses bad configs before any work starts, with one readable line (`UserError`, exit 2)."""

import math
import os

import ml_collections

from pah_jax import data as data_lib
from pah_jax.errors import UserError
from pah_jax.methods import registry

DATASETS = ("cifar100", "tiny_imagenet", "fashion_mnist", "npz")

# The keys every method shares; each method's own keys are checked as its declaration says
# (pah_jax.methods.registry.Declaration).
_CHOICES = {
    "data.name": DATASETS,
    "data.class_order": ("sequential", "random"),
    "data.normalization": ("dataset", "half"),
    "model.stem": ("cifar", "imagenet"),
    "model.conv_init": ("torchvision", "pytorch"),
    "model.small_map_convs": ("auto", "matmul", "conv"),
    "model.batch_norm": ("running", "batch"),
    "model.teacher_batch_norm": ("", "running", "batch"),
    "model.prototype_batch_norm": ("", "running", "batch"),
    "model.eval_batch_norm": ("", "running", "batch"),
    "model.dtype": ("float32", "bfloat16"),
    "train.loop": ("auto", "compiled", "python"),
    "train.eval_accuracy": ("examples", "batch_mean"),
}

# key: (lowest allowed, highest allowed or None, lowest excluded?)
_RANGES = {
    "seed": (0, None, False),
    "data.num_tasks": (1, None, False),
    "data.max_train_per_task": (0, None, False),
    "data.max_test_per_task": (0, None, False),
    "data.pad_to": (0, 4096, False),
    "data.class_order_seed": (-1, None, False),
    "model.width": (0.0, 64.0, True),
    "optim.lr_backbone": (0.0, None, True),
    "optim.lr_hypernet": (0.0, None, True),
    "optim.lr_prototypes": (0.0, None, True),
    "optim.lr_heads": (0.0, None, True),
    "optim.weight_decay": (0.0, None, False),
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
              "train.compilation_cache": "", "model.small_map_convs": "conv", "data.pad_to": 0,
              "data.class_order_seed": -1, "pah.crop_position": "center",
              "pah.lambda_fd": 0.0, "pah.lambda_hd": 0.0, "pah.head_warmup_steps": 0,
              "pah.head_warmup_above": 0.0}


def _resolve_small_map_convs(value):
  from pah_jax import models  # only here: validating a config needs no JAX

  return models.resolve_small_map_convs(value) if value in ("auto", "matmul", "conv") else value


# Keys whose values also count as equal when they resolve to the same computation on the
# backend that resumes. model.small_map_convs "auto" is "matmul" on a CPU and "conv" elsewhere
# (pah_jax.models.resolve_small_map_convs): a checkpoint written under "matmul" (the default
# before "auto") resumes under "auto" on a CPU, one written under "conv" (or before the key
# existed) under "auto" on a GPU, and "auto" under "auto" anywhere. A checkpoint does not
# record the backend that wrote it: "auto" written on a CPU and resumed on a GPU continues with
# the GPU's choice, the same function in another order of float sums.
RESOLVED_KEYS = {"model.small_map_convs": _resolve_small_map_convs}


def unread_by(method: str, key: str, config=None) -> bool:
  """Whether method `method` never reads config key `key` (dotted): a key of another method's
  sections or reads, and not of its own. A workdir may be resumed, or its results re-read,
  under a config that differs only in such keys: retuning the hypernetwork's learning rate
  leaves the finished runs of the stored-head baselines valid."""
  try:
    own = registry.declaration(method).owns_or_reads()
  except UserError:
    return False
  others = {k for d in registry.declarations(config) for k in d.owns_or_reads()}
  return registry.under(key, others) and not registry.under(key, own)


def _get(config, dotted: str):
  node = config
  for part in dotted.split("."):
    if part not in node:
      raise UserError(f"config has no key {dotted}: start from configs/default.py")
    node = node[part]
  return node


def validate(config: ml_collections.ConfigDict) -> None:
  """Every key of the shared groups and of every method's sections present, then the configured
  method's own checks."""
  method = registry.declaration(_get(config, "method"))  # an unknown method is a UserError
  choices, ranges = dict(_CHOICES), dict(_RANGES)
  for d in registry.declarations(config):
    if d is method or all(section in config for section in d.sections):
      choices.update(d.choices)
      ranges.update(d.ranges)
  for key, allowed in choices.items():
    value = _get(config, key)
    if value not in allowed:
      raise UserError(f"config {key}={value!r} is not one of {', '.join(map(repr, allowed))}")
  for key, (low, high, exclusive) in ranges.items():
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      raise UserError(f"config {key}={value!r} must be a finite number")
    if (value <= low if exclusive else value < low) or (high is not None and value > high):
      bound = f"> {low}" if exclusive else f">= {low}"
      bound += f" and <= {high}" if high is not None else ""
      raise UserError(f"config {key}={value!r} is out of range: it must be {bound}")
  if not isinstance(config.model.pretrained, str):
    raise UserError(f"config model.pretrained={config.model.pretrained!r} must be a file path or empty")
  if not isinstance(config.train.compilation_cache, str):
    raise UserError(f"config train.compilation_cache={config.train.compilation_cache!r} must be a directory "
                    "or empty (off)")
  if config.model.pretrained and not os.path.isfile(config.model.pretrained):
    raise UserError(f"config model.pretrained={config.model.pretrained}: no such file "
                    "(convert torchvision weights with experiments/convert_torchvision.py)")
  if method.check is not None:
    method.check(config)
  data_lib.check_config(config.data, config.seed)


def check_against_data(config: ml_collections.ConfigDict, tasks) -> None:
  """Checks that need the data's sizes: batches per task."""
  smallest = min(len(t.y_train) for t in tasks.tasks)
  if config.train.batch_size > smallest:
    raise UserError(f"config train.batch_size={config.train.batch_size} is larger than the smallest task's "
                    f"{smallest} training images: lower train.batch_size or raise data.max_train_per_task")


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

  # A key added to pah_jax counts as its ADDED_KEYS value on either side, so a config recorded
  # before the key existed matches one that writes it out, in whichever order they meet.
  old, new = {**ADDED_KEYS, **_flatten(saved)}, {**ADDED_KEYS, **_flatten(reporting.jsonable(config))}

  def same(k):
    resolve = RESOLVED_KEYS.get(k, lambda v: v)
    return old.get(k) == new.get(k) or resolve(old.get(k)) == resolve(new.get(k))

  differ = sorted(k for k in set(old) | set(new) if k not in RESUME_FREE_KEYS and not same(k)
                  and not unread_by(new.get("method", "pah"), k, config))
  if differ:
    shown = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in differ[:6])
    raise UserError(f"workdir was written with another config: {shown}; use a new --workdir or the same config")
