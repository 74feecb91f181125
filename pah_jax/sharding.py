"""One code path for one or many devices: a 1-D `data` mesh over all devices.

Parameters, optimiser states and each task's uint8 data are replicated; every batch is split
along the `data` axis. Under `jax.jit` the compiler then inserts the collectives itself:
gradients are summed across devices and BatchNorm's batch statistics are taken over the
global batch, so a run on N devices computes what one device would, batch for batch.

Several processes (hosts): once `pah_jax.distributed.initialize` has joined the job,
`jax.devices()` lists every process's devices and the same mesh spans them. Each process holds
the replicated arrays on its own devices and computes its devices' part of every global batch,
which it gathers by index from its copy of the task's data: no process ever builds another's
part, and the global batch is exactly the single-process one.
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
