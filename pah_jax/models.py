"""Flax modules: the ResNet-18 backbone beta_theta and the hypernetwork Upsilon.

Both are plain `flax.linen` modules; everything PAH does with them (heads generated from
prototypes, prototype forwards, losses) lives in `pah.py` as pure functions over the
parameter pytrees these modules create.
"""

from collections.abc import Callable
from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Initialisers of the backbone's convolutions (model.conv_init). Under BatchNorm a kernel's
# scale does not change the function, but it sets how far one AdamW step turns it (about
# lr / |w|), so the smaller PyTorch default learns ~2.4x faster at the same learning rate.
CONV_INITS = {
    # torchvision's ResNet: kaiming_normal_(mode="fan_out", nonlinearity="relu").
    "torchvision": nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
    # PyTorch's nn.Conv2d default, kaiming_uniform_(a=sqrt(5)): U(+-1/sqrt(fan_in)).
    "pytorch": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
}
# PyTorch's kaiming_normal_(mode="fan_in", nonlinearity="relu") as in the official hypernetwork.
_kaiming_fan_in = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


_NHWC = ("NHWC", "HWIO", "NHWC")


def _taps(size_in: int, size_out: int, stride: int, pad_low: int, kernel: int) -> np.ndarray:
  """taps[i, o]: the kernel offset that links input position i to output position o along one
  axis, or -1 where none does (o's window covers only padding there)."""
  offset = np.arange(size_in)[:, None] - stride * np.arange(size_out)[None, :] + pad_low
  return np.where((offset >= 0) & (offset < kernel), offset, -1)


def small_map_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                   dimension_numbers=None, feature_group_count=1, precision=None):
  """`lax.conv_general_dilated`, but a map with fewer positions than the kernel has taps becomes
  one matrix product (model.small_map_convs = "matmul", and "auto" on a CPU); any other
  convolution is passed on.

  Why: a 3x3 convolution with padding 1 over a 1x1 map multiplies 8 of its 9 taps by padding
  zeros, and over a 2x2 map 5 of 9 per position. XLA's CPU convolutions compute them all, and
  slowly at these sizes (docs/performance.md: the PAH step at width 1.0 went from 1459 to 283 ms).
  ResNet-18 with the `imagenet` stem meets such maps in stages 3-4 on 32x32 images and from
  stage 2 on on 10x10 prototypes. Here every (input position p, output position q) pair gets
  the one kernel tap that links them (zeros where none does), and the layer is
  y[n, q] = sum_{p, c} x[n, p, c] W[p, q, c, :]: h*w*ho*wo*C_in*C_out multiply-adds, fewer than
  the convolution's ho*wo*kh*kw*C_in*C_out when h*w < kh*kw (at h*w = kh*kw they tie, and the
  convolution was as fast). It is the same function, since padding contributes exact zeros:
  only the order of the float sums changes.
  """
  h, w = lhs.shape[1:3]
  kh, kw = rhs.shape[:2]
  plain = (feature_group_count != 1 or any(d != 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
           or isinstance(padding, str) and padding != "VALID"
           or dimension_numbers != jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC))
  if plain or h * w >= kh * kw:
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count, precision=precision)
  (top, bottom), (left, right) = ((0, 0), (0, 0)) if padding == "VALID" else padding
  sh, sw = window_strides
  ho, wo = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
  rows, cols = _taps(h, ho, sh, top, kh), _taps(w, wo, sw, left, kw)
  zero = jnp.zeros(rhs.shape[2:], rhs.dtype)
  weights = jnp.stack([
      jnp.stack([rhs[rows[i, o], cols[j, q]] if rows[i, o] >= 0 and cols[j, q] >= 0 else zero
                 for o in range(ho) for q in range(wo)])
      for i in range(h) for j in range(w)])  # (h*w, ho*wo, C_in, C_out)
  n, c = lhs.shape[0], lhs.shape[3]
  y = jnp.einsum("npc,pqcd->nqd", lhs.reshape(n, h * w, c), weights, precision=precision)
  return y.reshape(n, ho, wo, rhs.shape[3])


SMALL_MAP_CONVS = {"matmul": small_map_conv, "conv": None}
# What model.small_map_convs = "auto" runs on each JAX backend. "matmul" only where it was
# measured faster (the CPU: docs/performance.md); "conv" everywhere else until a measurement
# there says otherwise.
AUTO_SMALL_MAP_CONVS = {"cpu": "matmul"}


def resolve_small_map_convs(small_map_convs: str, backend: str | None = None) -> str:
  """The layers a run computes: `small_map_convs` itself ("matmul" or "conv"), or for "auto"
  the choice for `backend` (default: JAX's default backend, the one a run computes on)."""
  if small_map_convs != "auto":
    return small_map_convs
  return AUTO_SMALL_MAP_CONVS.get(backend or jax.default_backend(), "conv")


def conv_module(small_map_convs: str, **kwargs):
  """nn.Conv without bias, computing maps smaller than the kernel as `small_map_convs` says
  ("auto" resolved for JAX's default backend)."""
  small_map_convs = resolve_small_map_convs(small_map_convs)
  if small_map_convs not in SMALL_MAP_CONVS:
    raise ValueError(f"unknown small_map_convs {small_map_convs!r}")
  return functools.partial(nn.Conv, use_bias=False, conv_general_dilated=SMALL_MAP_CONVS[small_map_convs], **kwargs)


def batch_norm(train: bool, dtype):
  """BatchNorm as PyTorch's: eps 1e-5, momentum 0.1 (Flax's momentum=0.9)."""
  return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection (He et al. 2016)."""

  channels: int
  strides: int
  dtype: Any = jnp.float32
  conv_init: str = "torchvision"
  small_map_convs: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool):
    conv = conv_module(self.small_map_convs, kernel_init=CONV_INITS[self.conv_init], dtype=self.dtype)
    norm = batch_norm(train, self.dtype)
    y = conv(self.channels, (3, 3), self.strides, padding=((1, 1), (1, 1)), name="conv1")(x)
    y = nn.relu(norm(name="bn1")(y))
    y = conv(self.channels, (3, 3), 1, padding=((1, 1), (1, 1)), name="conv2")(y)
    y = norm(name="bn2")(y)
    if self.strides != 1 or x.shape[-1] != self.channels:
      x = conv(self.channels, (1, 1), self.strides, padding="VALID", name="downsample_conv")(x)
      x = norm(name="downsample_bn")(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet with BasicBlocks and a global-average-pooled feature output (no classifier).

  Attributes:
    stage_sizes: blocks per stage; [2, 2, 2, 2] is ResNet-18.
    width: channel multiplier; 1.0 gives 64-128-256-512 and a 512-d feature.
    stem: "cifar" (3x3 conv stride 1, no max-pool) or "imagenet" (7x7 stride 2 + 3x3 max-pool,
      as torchvision and the official PAH code, which feeds it 32x32 images unresized).
    conv_init: a key of CONV_INITS, the convolutions' initialiser.
    small_map_convs: "matmul" (maps smaller than the kernel as one matrix product, see
      `small_map_conv`), "conv" (every layer as a convolution) or "auto" (the backend's choice,
      `resolve_small_map_convs`).
  """

  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: float = 1.0
  stem: str = "cifar"
  dtype: Any = jnp.float32
  conv_init: str = "torchvision"
  small_map_convs: str = "auto"

  @property
  def stage_channels(self) -> tuple[int, ...]:
    return tuple(max(1, round(c * self.width)) for c in (64, 128, 256, 512))

  @property
  def feature_dim(self) -> int:
    return self.stage_channels[-1]

  @nn.compact
  def __call__(self, x, train: bool):
    x = x.astype(self.dtype)
    c0 = self.stage_channels[0]
    if self.conv_init not in CONV_INITS:
      raise ValueError(f"unknown conv_init {self.conv_init!r}")
    conv = conv_module(self.small_map_convs, kernel_init=CONV_INITS[self.conv_init], dtype=self.dtype)
    norm = batch_norm(train, self.dtype)
    if self.stem == "cifar":
      x = conv(c0, (3, 3), 1, padding=((1, 1), (1, 1)), name="conv1")(x)
      x = nn.relu(norm(name="bn1")(x))
    elif self.stem == "imagenet":
      x = conv(c0, (7, 7), 2, padding=((3, 3), (3, 3)), name="conv1")(x)
      x = nn.relu(norm(name="bn1")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"unknown stem {self.stem!r}")
    for stage, (blocks, channels) in enumerate(zip(self.stage_sizes, self.stage_channels)):
      for b in range(blocks):
        strides = 2 if stage > 0 and b == 0 else 1
        x = BasicBlock(channels, strides, dtype=self.dtype, conv_init=self.conv_init,
                       small_map_convs=self.small_map_convs, name=f"layer{stage + 1}_{b}")(x, train)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2))

_ACTIVATIONS: dict[str, Callable] = {
    "leaky_relu": functools.partial(nn.leaky_relu, negative_slope=0.01),
    "relu": nn.relu,
    "gelu": nn.gelu,
}


class Hypernetwork(nn.Module):
  """Upsilon: MLP from a task embedding e_k to the flat parameters of task k's head.

  Official code (HyperNetwork_seq/FCBlock): in -> H, `layers` x (H -> H), H -> out, LeakyReLU(0.01)
  after every layer but the last, no biases, Kaiming-normal fan-in init with the last layer's
  weights divided by 10 (`last_layer_scale`).
  """

  out_features: int
  hidden: int = 16
  layers: int = 1
  activation: str = "leaky_relu"
  use_bias: bool = False
  last_layer_scale: float = 0.1

  @nn.compact
  def __call__(self, e):
    act = _ACTIVATIONS[self.activation]
    dense = functools.partial(nn.Dense, use_bias=self.use_bias, kernel_init=_kaiming_fan_in)
    h = act(dense(self.hidden, name="in")(e))
    for i in range(self.layers):
      h = act(dense(self.hidden, name=f"hidden{i}")(h))
    scaled = lambda key, shape, dtype=jnp.float32: _kaiming_fan_in(key, shape, dtype) * self.last_layer_scale
    return nn.Dense(self.out_features, use_bias=self.use_bias, kernel_init=scaled, name="out")(h)


def count_params(tree) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
