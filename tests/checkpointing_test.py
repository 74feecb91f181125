"""Packed checkpoints: every array comes back bit for bit, where the template puts it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pah_jax import checkpointing
from pah_jax import errors
from pah_jax.methods import base


def _state(seed=0, hidden=5):
  rng = np.random.default_rng(seed)
  params = {"backbone": {"kernel": jnp.asarray(rng.standard_normal((3, 3, 2, 4)), jnp.float32),
                         "scale": jnp.asarray(rng.standard_normal(4), jnp.float32)},
            "hypernet": {"w": jnp.asarray(rng.standard_normal((hidden, 7)), jnp.bfloat16)},
            "empty": jnp.zeros((0, 3), jnp.float32)}
  extra = {"buffer_labels": jnp.asarray(rng.integers(0, 9, 6), jnp.int32),
           "images": jnp.asarray(rng.integers(0, 255, (2, 4, 4, 1)), jnp.uint8),
           "seen": jnp.asarray([True, False])}
  return base.TrainState(step=jnp.asarray(17, jnp.int32), params=params, batch_stats={"mean": jnp.ones(4)},
                         opt_state=(jnp.zeros(()), {"mu": params["backbone"]}), extra=extra,
                         rng=jax.random.PRNGKey(seed))


def test_pack_makes_one_array_per_dtype_and_unpack_inverts_it():
  state = _state()
  packed, packing = checkpointing.pack(state)
  assert sorted(packed) == ["bfloat16", "bool", "float32", "int32", "uint32", "uint8"]
  assert all(x.ndim == 1 for x in packed.values())
  leaves = jax.tree_util.tree_leaves(state)
  assert [e["shape"] for e in packing] == [list(x.shape) for x in leaves]
  for got, want in zip(checkpointing.unpack(packed, packing), leaves):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, np.asarray(want))


def test_save_restore_and_read_state_round_trip(tmp_path):
  state = _state()
  with checkpointing.Checkpointer(str(tmp_path / "w")) as ckpt:
    ckpt.save(state, {"position": {"task": 1, "epoch": 0, "batch": 0}})
    restored, meta = ckpt.restore(_state(seed=1))  # a template: only structure, shapes, dtypes count
    assert meta["position"]["task"] == 1 and meta["step"] == 17
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(state)):
      assert isinstance(got, jax.Array) and got.dtype == want.dtype
      np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    arrays, _ = ckpt.read_state()
    kernel = np.asarray(state.params["backbone"]["kernel"])
    np.testing.assert_array_equal(arrays[".params['backbone']['kernel']"], kernel)
    assert arrays[".step"] == 17


def test_a_checkpoint_of_other_arrays_is_refused_by_name(tmp_path):
  with checkpointing.Checkpointer(str(tmp_path / "w")) as ckpt:
    ckpt.save(_state(), {"position": {"task": 1, "epoch": 0, "batch": 0}})
    with pytest.raises(errors.UserError, match=r"\['hypernet'\]\['w'\] bfloat16\[5, 7\] where .* bfloat16\[6, 7\]"):
      ckpt.restore(_state(hidden=6))
