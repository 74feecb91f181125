"""One code path for one or many devices: a 1-D `data` mesh over all devices.

Parameters, optimiser states and each task's uint8 data are replicated; every batch is split
along the `data` axis. Under `jax.jit` the compiler then inserts the collectives itself:
gradients are summed across devices and BatchNorm's batch statistics are taken over the
global batch, so a run on N devices computes what one device would, batch for batch.

Multi-host (several machines): call `jax.distributed.initialize()` before the first JAX call
in each process (e.g. at the top of `pah_jax.main`); `jax.devices()` then lists every host's
devices and the same mesh spans them.
"""

import jax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

AXIS = "data"


def data_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), (AXIS,))


def replicate(tree, mesh: Mesh):
  """Places every array of `tree` on all devices of the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, P()))


def split_batch(x: jax.Array, mesh: Mesh) -> jax.Array:
  """Inside jit: declares `x`'s leading (batch) axis split over the `data` axis."""
  if mesh.size == 1:
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(AXIS)))
