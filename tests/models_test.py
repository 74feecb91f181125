"""ResNet-18 backbone and hypernetwork: parameter counts, shapes, structure, init.

Full-width models are only traced (jax.eval_shape): no real computation at width 1.0.

Small maps as matrix products against convolutions: the same function with its sums in
another order. One layer agrees within tests/tolerance.py's one-evaluation bound (1e-5
relative). Through a ResNet in training mode the BatchNorms of the 1x1 and 2x2 stages
normalise a few numbers per channel, dividing by statistics that rounding perturbs, so the
features get 1e-4 and the gradients (one more pass through those divisions) 1e-3 relative.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pah_jax import models

KEY = jax.random.PRNGKey(0)
# LLVM optimisation off: compile time dominates these tiny programs (results unchanged).
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _abstract_backbone(width, stem, size=32, batch=2, channels=3):
  """(abstract params, abstract batch_stats, abstract features) of a ResNet-18 on (batch, size, size, ch)."""
  net = models.ResNet18(width=width, stem=stem)
  x = jax.ShapeDtypeStruct((batch, size, size, channels), jnp.float32)
  variables = jax.eval_shape(lambda k, x: net.init(k, x, train=False), KEY, x)
  features = jax.eval_shape(lambda v, x: net.apply(v, x, train=False), variables, x)
  return variables["params"], variables["batch_stats"], features


# --------------------------------------------------------------------------- ResNet-18


def test_resnet18_imagenet_stem_param_count_matches_torchvision():
  """torchvision resnet18 has 11,689,512 parameters; without its fc (512*1000 + 1000 = 513,000)
  that is 11,176,512, which our imagenet-stem backbone must match exactly (BN scale/bias
  included, running statistics excluded)."""
  params, _, _ = _abstract_backbone(1.0, "imagenet")
  assert 11_689_512 - 513_000 == 11_176_512
  assert models.count_params(params) == 11_176_512


def test_resnet18_cifar_stem_param_count():
  """The cifar stem swaps conv1 7x7x3x64 (9,408) for 3x3x3x64 (1,728): 11,176,512 - 7,680."""
  params, _, _ = _abstract_backbone(1.0, "cifar")
  assert models.count_params(params) == 11_176_512 - 7 * 7 * 3 * 64 + 3 * 3 * 3 * 64 == 11_168_832
  assert params["conv1"]["kernel"].shape == (3, 3, 3, 64)
  imagenet, _, _ = _abstract_backbone(1.0, "imagenet")
  assert imagenet["conv1"]["kernel"].shape == (7, 7, 3, 64)


def test_resnet18_structure():
  """[2, 2, 2, 2] BasicBlocks; a 1x1 downsample only in the first block of stages 2-4; the
  BatchNorm running statistics cover bn1 and every block's norms (20 BN layers)."""
  params, stats, _ = _abstract_backbone(1.0, "cifar")
  blocks = sorted(k for k in params if k.startswith("layer"))
  assert blocks == [f"layer{s}_{b}" for s in range(1, 5) for b in range(2)]
  with_downsample = sorted(k for k in blocks if "downsample_conv" in params[k])
  assert with_downsample == ["layer2_0", "layer3_0", "layer4_0"]
  assert params["layer4_0"]["downsample_conv"]["kernel"].shape == (1, 1, 256, 512)
  assert params["layer2_1"]["conv2"]["kernel"].shape == (3, 3, 128, 128)
  num_bn = 1 + 8 * 2 + 3
  assert len(jax.tree_util.tree_leaves(stats)) == 2 * num_bn  # mean and var per BN
  assert models.count_params(stats) == 2 * (64 + 2 * 2 * (64 + 128 + 256 + 512) + 128 + 256 + 512)


@pytest.mark.parametrize("width,dim", [(1.0, 512), (0.25, 128), (0.125, 64)])
def test_feature_dim(width, dim):
  """D = 512 * width, both as the property and as the traced output's last axis."""
  assert models.ResNet18(width=width).feature_dim == dim
  _, _, features = _abstract_backbone(width, "cifar", batch=3)
  assert features.shape == (3, dim)
  assert features.dtype == jnp.float32


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
@pytest.mark.parametrize("size", [32, 64, 5, 10, 16, 20])
def test_output_shape_any_input_size(stem, size):
  """Images (32, 64) and prototypes at their native s x s size (5, 10, 16, 20) give (N, D)."""
  _, _, features = _abstract_backbone(0.25, stem, size=size, batch=4)
  assert features.shape == (4, 128)


@pytest.mark.parametrize("stem,sizes", [("imagenet", (8, 8, 4, 2, 1)), ("cifar", (32, 32, 16, 8, 4))])
def test_stem_downsampling(stem, sizes):
  """32x32 input: the imagenet stem (7x7 stride 2, then 3x3 max-pool stride 2) hands 8x8 to
  stage 1, the cifar stem 32x32; stages 2-4 halve the resolution (traced, width 0.125)."""
  net = models.ResNet18(width=0.125, stem=stem)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(lambda k, x: net.init(k, x, train=False), KEY, x)
  _, state = jax.eval_shape(
      lambda v, x: net.apply(v, x, train=False, capture_intermediates=True, mutable=["intermediates"]),
      variables, x)
  inter = state["intermediates"]
  assert inter["bn1"]["__call__"][0].shape[1] == 32 // (2 if stem == "imagenet" else 1)
  got = tuple(inter[name]["__call__"][0].shape[1]
              for name in ("layer1_0", "layer1_1", "layer2_1", "layer3_1", "layer4_1"))
  assert got == sizes


def test_param_shapes_do_not_depend_on_input_size():
  """One parameter set serves 32x32 images and 10x10 prototypes (global average pool)."""
  a, _, _ = _abstract_backbone(0.25, "imagenet", size=32)
  b, _, _ = _abstract_backbone(0.25, "imagenet", size=10)
  assert jax.tree_util.tree_map(lambda x: x.shape, a) == jax.tree_util.tree_map(lambda x: x.shape, b)


def test_unknown_stem_raises():
  """A typo in the stem name is an error, not a silent default."""
  with pytest.raises(ValueError, match="stem"):
    _abstract_backbone(0.125, "cifra")


@pytest.mark.parametrize("conv_init", ["torchvision", "pytorch"])
def test_conv_init_std(conv_init):
  """torchvision: N(0, 2 / fan_out); pytorch (nn.Conv2d's default): U(+-1/sqrt(fan_in)), whose
  std is 1/sqrt(3 fan_in). Checked on layer4's 3x3x128x128 kernels (147k draws, width 0.25)."""
  net = models.ResNet18(width=0.25, stem="cifar", conv_init=conv_init)
  params = jit(lambda k: net.init(k, jnp.zeros((1, 8, 8, 3)), train=False))(KEY)["params"]
  kernel = np.asarray(params["layer4_1"]["conv1"]["kernel"])
  fan = 3 * 3 * 128
  expected = np.sqrt(2.0 / fan) if conv_init == "torchvision" else np.sqrt(1.0 / (3 * fan))
  assert abs(kernel.std() / expected - 1) < 0.02
  if conv_init == "pytorch":
    assert np.abs(kernel).max() <= 1 / np.sqrt(fan)
  with pytest.raises(ValueError, match="conv_init"):
    models.ResNet18(width=0.125, conv_init="he").init(KEY, jnp.zeros((1, 8, 8, 3)), train=False)


_NHWC = ("NHWC", "HWIO", "NHWC")


def _primitive_count(fn, *args, name: str) -> int:
  return str(jax.make_jaxpr(fn)(*args)).count(name)


@pytest.mark.parametrize("size,kernel,stride,pad,dense", [
    ((1, 1), 3, 1, 1, True),   # stage 4 of a 32x32 image under the imagenet stem: 1 tap of 9
    ((2, 2), 3, 1, 1, True),   # stage 3: 4 taps of 9 per output position
    ((2, 2), 3, 2, 1, True),   # layer4_0.conv1: 2x2 -> 1x1
    ((1, 2), 3, 1, 1, True),   # not square
    ((2, 2), 7, 2, 3, True),   # the imagenet stem on 2x2 prototypes
    ((3, 3), 3, 2, 1, False),  # 9 positions, 9 taps: stays a convolution
    ((2, 2), 1, 2, 0, False),  # a 1x1 downsample is a convolution already
])
def test_small_map_conv_is_the_convolution(size, kernel, stride, pad, dense):
  """model.small_map_convs=matmul: a map with fewer positions than the kernel has taps runs as
  one matrix product (no convolution left in the program), with the convolution's output and
  both gradients; other shapes are passed to lax.conv_general_dilated unchanged."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(5, *size, 4)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 4, 6)), jnp.float32)
  padding = ((pad, pad), (pad, pad))
  dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, _NHWC)

  def loss(conv_fn):
    def f(x, w):
      y = conv_fn(x, w, (stride, stride), padding, dimension_numbers=dn, precision="highest")
      return jnp.sum(jnp.sin(y)), y
    return f

  (_, want), want_grads = jax.value_and_grad(loss(jax.lax.conv_general_dilated), (0, 1), has_aux=True)(x, w)
  (_, got), got_grads = jax.value_and_grad(loss(models.small_map_conv), (0, 1), has_aux=True)(x, w)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  for g, e in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
  convs = _primitive_count(lambda x, w: loss(models.small_map_conv)(x, w)[0], x, w, name="conv_general_dilated")
  assert (convs == 0) == dense


@pytest.mark.parametrize("size,dense_layers", [(32, 7), (10, 11)])
def test_resnet_small_map_convs_compute_the_same_function(size, dense_layers):
  """The imagenet stem on 32x32 images (stages 3-4 at 2x2 and 1x1) and on 10x10 prototypes:
  "matmul" turns 7 and 11 of the 20 convolutions into matrix products, and gives the features,
  the batch statistics and the parameter gradients of "conv" (width 0.125, training mode)."""
  x = jnp.asarray(np.random.default_rng(1).normal(size=(6, size, size, 3)), jnp.float32)
  nets = {mode: models.ResNet18(width=0.125, stem="imagenet", small_map_convs=mode) for mode in ("conv", "matmul")}
  variables = jit(lambda k: nets["conv"].init(k, x, train=False))(KEY)

  def run(net):
    def loss(params):
      features, updates = net.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, train=True,
                                    mutable=["batch_stats"])
      return jnp.sum(features ** 2), (features, updates["batch_stats"])
    return jax.grad(loss, has_aux=True)

  want_grads, (want, want_stats) = jit(run(nets["conv"]))(variables["params"])
  got_grads, (got, got_stats) = jit(run(nets["matmul"]))(variables["params"])
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  for tree_got, tree_want in ((got_stats, want_stats), (got_grads, want_grads)):
    for g, e in zip(jax.tree_util.tree_leaves(tree_got), jax.tree_util.tree_leaves(tree_want)):
      np.testing.assert_allclose(g, e, rtol=1e-3, atol=1e-4 * float(np.abs(e).max()) + 1e-7)
  count = lambda net: _primitive_count(lambda v: net.apply(v, x, train=False), variables, name="conv_general_dilated")
  assert count(nets["conv"]) == 20
  assert count(nets["matmul"]) == 20 - dense_layers
  with pytest.raises(ValueError, match="small_map_convs"):
    models.ResNet18(width=0.125, small_map_convs="dense").init(KEY, x, train=False)


def test_small_map_convs_auto_is_matmul_on_a_cpu_and_conv_elsewhere():
  """The default ("auto", in configs/default.py and the modules) runs "matmul" only where it was
  measured faster, the CPU; an explicit choice is kept on every backend."""
  assert models.resolve_small_map_convs("auto", "cpu") == "matmul"
  assert models.resolve_small_map_convs("auto", "gpu") == models.resolve_small_map_convs("auto", "tpu") == "conv"
  assert models.resolve_small_map_convs("conv", "cpu") == "conv"
  assert models.resolve_small_map_convs("matmul", "gpu") == "matmul"
  x = jnp.zeros((2, 32, 32, 3), jnp.float32)
  net = models.ResNet18(width=0.125, stem="imagenet")
  variables = jit(lambda k: net.init(k, x, train=False))(KEY)
  convs = _primitive_count(lambda v: net.apply(v, x, train=False), variables, name="conv_general_dilated")
  assert convs == (20 - 7 if jax.default_backend() == "cpu" else 20)


def test_tiny_forward_train_vs_eval():
  """Real compute at width 0.125 on 8 px: finite (N, 64) features; train=True moves bn1's running
  mean to 0.9 * 0 + 0.1 * (batch mean of conv1's output), train=False returns the features only."""
  net = models.ResNet18(width=0.125, stem="cifar")
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(2.0, 1.0, (4, 8, 8, 3)), jnp.float32)
  abstract = jax.eval_shape(lambda k: net.init(k, x, train=False), KEY)
  params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.2, s.shape), jnp.float32),
                                  abstract["params"])
  stats = jax.tree_util.tree_map_with_path(
      lambda path, s: jnp.ones(s.shape) if path[-1].key == "var" else jnp.zeros(s.shape),
      abstract["batch_stats"])
  variables = {"params": params, "batch_stats": stats}
  features, updates = jit(lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
  assert features.shape == (4, 64) and np.all(np.isfinite(features))
  conv1 = jax.lax.conv_general_dilated(x, params["conv1"]["kernel"], (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
  expected_mean = 0.1 * np.asarray(conv1).mean(axis=(0, 1, 2))
  np.testing.assert_allclose(updates["batch_stats"]["bn1"]["mean"], expected_mean, rtol=1e-4, atol=1e-6)
  eval_features = jit(lambda v, x: net.apply(v, x, train=False))(variables, x)
  assert eval_features.shape == (4, 64) and np.all(np.isfinite(eval_features))
  assert not np.allclose(eval_features, features)  # running (0, 1) vs batch statistics


# --------------------------------------------------------------------------- hypernetwork


def _abstract_hypernet(out, hidden, layers, in_dim=20, use_bias=False):
  net = models.Hypernetwork(out_features=out, hidden=hidden, layers=layers, use_bias=use_bias)
  return net, jax.eval_shape(net.init, KEY, jax.ShapeDtypeStruct((3, in_dim), jnp.float32))["params"]


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_hypernet_layer_structure(layers):
  """Official FCBlock: in -> H, `layers` x H -> H, H -> out; no biases by default."""
  _, params = _abstract_hypernet(out=2 * 64, hidden=16, layers=layers)
  expected = {"in": (20, 16), "out": (16, 128)} | {f"hidden{i}": (16, 16) for i in range(layers)}
  assert {k: v["kernel"].shape for k, v in params.items()} == expected
  assert all(set(v) == {"kernel"} for v in params.values())
  assert models.count_params(params) == 20 * 16 + layers * 16 * 16 + 16 * 128


def test_hypernet_use_bias_adds_biases():
  """use_bias=True gives every layer a bias of its output width."""
  _, params = _abstract_hypernet(out=10, hidden=8, layers=1, use_bias=True)
  assert {k: v["bias"].shape for k, v in params.items()} == {"in": (8,), "hidden0": (8,), "out": (10,)}


def test_hypernet_forward_is_leaky_relu_mlp():
  """Forward equals a hand-written numpy MLP with LeakyReLU(0.01) after every layer but the last."""
  net, abstract = _abstract_hypernet(out=6, hidden=5, layers=1, in_dim=4)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(lambda s: rng.normal(size=s.shape).astype(np.float32), abstract)
  e = rng.normal(size=(3, 4)).astype(np.float32)
  leaky = lambda z: np.where(z > 0, z, 0.01 * z)
  h = leaky(e @ params["in"]["kernel"])
  h = leaky(h @ params["hidden0"]["kernel"])
  expected = h @ params["out"]["kernel"]
  np.testing.assert_allclose(net.apply({"params": params}, e), expected, rtol=1e-5, atol=1e-6)


def test_hypernet_init_std():
  """Kaiming-normal fan-in: first layer std sqrt(2/in); last layer divided by 10:
  std 0.1 * sqrt(2/H) (statistical check on a 16 x 100,000 kernel, 3% tolerance)."""
  hidden, in_dim, out = 16, 50, 100_000
  net = models.Hypernetwork(out_features=out, hidden=hidden, layers=1)
  params = jit(net.init)(KEY, jnp.zeros((1, in_dim)))["params"]
  last = np.asarray(params["out"]["kernel"])
  assert last.shape == (hidden, out)
  assert abs(last.mean()) < 0.01 * 0.1 * np.sqrt(2 / hidden)
  np.testing.assert_allclose(last.std(), 0.1 * np.sqrt(2 / hidden), rtol=0.03)
  # The others are small (800 and 256 numbers): loose, but far from the last layer's scale.
  np.testing.assert_allclose(np.asarray(params["in"]["kernel"]).std(), np.sqrt(2 / in_dim), rtol=0.15)
  np.testing.assert_allclose(np.asarray(params["hidden0"]["kernel"]).std(), np.sqrt(2 / hidden), rtol=0.3)
