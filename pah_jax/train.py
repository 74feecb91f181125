"""Continual training, the same loop for every method: state, jitted steps, the task loop.

`train_and_evaluate(config, workdir)` is the whole job of the command line: load the task
sequence, build the configured method (`pah_jax.methods`), train task after task, fill the
accuracy matrix, checkpoint at every task end, resume from the newest checkpoint, write
results, plots and TensorBoard scalars.
"""

from collections.abc import Callable
import contextlib
import copy
import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from pah_jax import checkpointing
from pah_jax import config_check
from pah_jax import data as data_lib
from pah_jax import distributed
from pah_jax import errors
from pah_jax import images as images_lib
from pah_jax import methods
from pah_jax import metrics as metrics_lib
from pah_jax import networks
from pah_jax import pretrained
from pah_jax import reporting
from pah_jax import sharding
from pah_jax.methods import base

TrainState = base.TrainState


# --------------------------------------------------------------------------- state


def create_state(method: base.Method, config: ml_collections.ConfigDict) -> TrainState:
  """Step 0 of a run: the method's fresh parameters (pretrained backbone when configured), its
  optimiser state and its own state, and the run's root PRNG key."""
  rng = jax.random.PRNGKey(config.seed)
  # Each part compiled as one program: run op by op, initialisers cost ~20 s of compiles on a
  # CPU. Optimising these run-once programs is not worth their compile time on CPU either.
  options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
  params, batch_stats = jax.jit(method.init, compiler_options=options)(jax.random.fold_in(rng, 0))
  params, batch_stats = pretrained.load_from_config(config.model, params, batch_stats)

  def complete(params, batch_stats):
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=method.optimizer.init(params), extra=method.init_extra(params, batch_stats),
                      rng=rng)

  return jax.jit(complete, compiler_options=options)(params, batch_stats)


# --------------------------------------------------------------------------- the step


def make_train_step(method: base.Method, *, augment: bool, mean, std, mesh=None) -> Callable:
  """The loop's step around `method.step`: splits the uint8 batch over devices, augments and
  normalises it on device, runs the method's update and advances the step counter.
  `task_id` is a traced int, so one compiled step serves the whole run."""
  mean, std = tuple(mean), tuple(std)

  def step(state: TrainState, images_u8, labels, task_id):
    if mesh is not None:  # batch split over devices; BatchNorm and gradients stay global
      images_u8, labels = sharding.split_batch(images_u8, mesh), sharding.split_batch(labels, mesh)
    images = images_u8
    if augment:
      # Streams of the root key: 0 initialisation, 1 data order, 2 augmentation.
      images = images_lib.random_crop_flip(jax.random.fold_in(jax.random.fold_in(state.rng, 2), state.step),
                                           images_u8)
    batch = base.Batch(images_lib.normalize(images, mean, std), images_u8, labels, task_id)
    state, metrics = method.step(state, batch)
    return state.replace(step=state.step + 1), {k: metrics[k].astype(jnp.float32) for k in method.metric_names}

  return step


def epoch_permutation(key, num_valid, size: int):
  """A random order of the first `num_valid` of `size` (padded) examples, traced num_valid."""
  scores = jax.random.uniform(key, (size,))
  return jnp.argsort(jnp.where(jnp.arange(size) < num_valid, scores, 2.0))


def use_compiled_loops(loop: str) -> bool:
  """Whether epochs and evaluation run as compiled loops (`lax.fori_loop` / `lax.map`).

  On GPU and TPU a compiled loop removes all per-step Python and host work. XLA's CPU backend,
  however, runs convolutions inside a rolled loop several times slower than the same step
  compiled alone (docs/performance.md, "How the training path runs"), so "auto" drives steps
  from Python on CPU; the data stay device-resident.
  """
  if loop == "auto":
    return jax.default_backend() != "cpu"
  return loop == "compiled"


def make_train_chunk(step: Callable, batch_size: int, compiled: bool, metric_names, seeds: bool = False,
                     static_length: bool = True) -> Callable:
  """Runs `num_steps` steps of a task from its step `first_step`, on device-resident data.

  A task's steps run epoch after epoch: with E = num_valid // batch_size steps per epoch, its
  step g is batch g % E of epoch g // E, in that epoch's order, a permutation drawn from
  (task, epoch). So a step's batch never depends on how the steps were chunked, and a resumed
  run sees exactly the data order of an uninterrupted one. A chunk may cross one epoch's end
  (num_steps <= E). Returns the new state and the metrics averaged over the chunk.

  Compiled loops take `num_steps` as a static Python int (static_length), so XLA knows the
  loop's trip count. With an unknown count XLA's GPU runtime copies the loop condition to the
  host and waits for the device after every step, so the host cannot queue a step's kernels
  while the device still runs the previous one. Each distinct num_steps compiles once;
  `chunk_plan` keeps a run to one or two lengths.

  seeds=True: several runs at once (`train_seeds`). State, images, labels and
  num_valid carry a leading seed axis and every per-run function is `jax.vmap`ped over it, so
  each run draws its own order from its own key, exactly as it would alone.
  """
  over_seeds = lambda f, *axes: jax.vmap(f, in_axes=axes) if seeds else f

  def orders(state, images, num_valid, task_id, first_step):
    """The permutations of the epoch holding `first_step` and of the next: (2, size)."""
    epoch = first_step // (num_valid // batch_size)
    key = jax.random.fold_in(jax.random.fold_in(state.rng, 1), task_id)  # stream 1: data order
    return jnp.stack([epoch_permutation(jax.random.fold_in(key, epoch + i), num_valid, images.shape[0])
                      for i in (0, 1)])

  def batch_at(images, labels, perms, num_valid, first_step, g):
    steps_per_epoch = num_valid // batch_size
    epoch, b = g // steps_per_epoch, g % steps_per_epoch
    row = epoch - first_step // steps_per_epoch  # 0: the chunk's first epoch, 1: the next
    idx = jax.lax.dynamic_slice(perms, (row, b * batch_size), (1, batch_size))[0]
    return images[idx], labels[idx]

  def chunk(state: TrainState, images, labels, num_valid, task_id, first_step, num_steps):
    perms = orders(state, images, num_valid, task_id, first_step)
    sums = {name: jnp.zeros((), jnp.float32) for name in metric_names}

    def body(i, carry):
      state, sums = carry
      state, metrics = step(state, *batch_at(images, labels, perms, num_valid, first_step, first_step + i),
                            task_id)
      return state, jax.tree_util.tree_map(jnp.add, sums, metrics)

    state, sums = jax.lax.fori_loop(0, num_steps, body, (state, sums))
    return state, jax.tree_util.tree_map(lambda x: x / jnp.maximum(num_steps, 1), sums)

  if compiled:
    return jax.jit(over_seeds(chunk, 0, 0, 0, 0, None, None, None), donate_argnums=(0,),
                   static_argnums=(6,) if static_length else ())

  jit_orders = jax.jit(over_seeds(orders, 0, 0, 0, None, None))

  def one_step(state: TrainState, images, labels, perms, num_valid, task_id, first_step, g):
    return step(state, *batch_at(images, labels, perms, num_valid, first_step, g), task_id)

  jit_step = jax.jit(over_seeds(one_step, 0, 0, 0, 0, 0, None, None, None), donate_argnums=(0,))

  def python_chunk(state: TrainState, images, labels, num_valid, task_id, first_step, num_steps):
    perms = jit_orders(state, images, num_valid, task_id, first_step)
    sums = None
    for g in range(first_step, first_step + num_steps):
      state, metrics = jit_step(state, images, labels, perms, num_valid, task_id, first_step, g)
      sums = metrics if sums is None else jax.tree_util.tree_map(jnp.add, sums, metrics)
    return state, jax.tree_util.tree_map(lambda x: x / num_steps, sums)

  return python_chunk


def chunk_plan(first_step: int, total_steps: int, length: int, checkpoint_every: int = 0, step: int = 0):
  """The chunks (first step, number of steps) that run a task's steps first_step..total_steps-1.

  Chunks have `length` steps (the caller caps it at one epoch), aligned to multiples of it from
  the task's start, so a resumed run logs at the steps of an uninterrupted one and a whole task
  usually needs one compiled length, two with a remainder. With `checkpoint_every` they also
  end on every multiple of it of the run's global step counter, whose value at first_step is
  `step`.
  """
  g = first_step
  while g < total_steps:
    n = min(length - g % length, total_steps - g)
    if checkpoint_every:
      n = min(n, checkpoint_every - step % checkpoint_every)
    yield g, n
    g, step = g + n, step + n


# --------------------------------------------------------------------------- evaluation


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """How test accuracy is measured (`eval_settings` makes it from a config and a method)."""

  batch_statistics: bool  # BatchNorm with each batch's own statistics (official), else running
  batch_size: int  # batch statistics: the official protocol's shuffled batches of the training size
  eval_batch_size: int  # running statistics: fixed-size padded batches of this size
  batch_mean: bool  # the mean of the per-batch accuracies (official), else over examples
  compiled: bool  # batches as one compiled lax.map, else one jitted call per batch


def eval_settings(config: ml_collections.ConfigDict, method: base.Method) -> EvalSettings:
  return EvalSettings(batch_statistics=evaluation_batch_stats(config, method), batch_size=config.train.batch_size,
                      eval_batch_size=config.train.eval_batch_size,
                      batch_mean=config.train.eval_accuracy == "batch_mean",
                      compiled=use_compiled_loops(config.train.loop))


def make_evaluate(logits_fn: Callable, settings: EvalSettings, mean, std, mesh=None) -> Callable:
  """Test accuracy (%) of task `task_id` with that task's head (`logits_fn` = Method.logits).

  Running statistics: fixed-size padded batches. Batch statistics (official): the official
  protocol's shuffled batches of `batch_size` (the last one smaller), since each batch's own
  statistics normalise it. The accuracy is over examples, or with `batch_mean` the mean of
  the per-batch accuracies, as the official code reports it.
  """
  bn_batch, batch_size, eval_batch_size = settings.batch_statistics, settings.batch_size, settings.eval_batch_size
  compiled, batch_mean = settings.compiled, settings.batch_mean

  def correct(params, batch_stats, images_u8, labels, valid, task_id):
    if mesh is not None and images_u8.shape[0] % mesh.size == 0:
      images_u8 = sharding.split_batch(images_u8, mesh)
    logits = logits_fn(params, batch_stats, images_lib.normalize(images_u8, mean, std), task_id, bn_batch)
    return jnp.sum((jnp.argmax(logits, -1) == labels) & valid)

  jit_correct = jax.jit(correct)

  @jax.jit
  def compiled_batches(params, batch_stats, images, labels, valid, task_id):
    return jax.lax.map(lambda xs: correct(params, batch_stats, *xs, task_id), (images, labels, valid))

  def per_batch(params, batch_stats, images, labels, valid, task_id) -> np.ndarray:
    """Correct predictions of each of the (nb, size) batches."""
    if compiled:
      return np.asarray(compiled_batches(params, batch_stats, images, labels, valid, task_id))
    return np.array([jit_correct(params, batch_stats, images[i], labels[i], valid[i], task_id)
                     for i in range(len(images))])

  def evaluate(params, batch_stats, images: np.ndarray, labels: np.ndarray, task_id: int, seed: int) -> float:
    n = len(labels)
    if bn_batch:
      order = np.random.default_rng([seed, task_id, 0xE7A1]).permutation(n)
      images, labels = images[order], labels[order]
    size = batch_size if bn_batch else eval_batch_size
    # Batch statistics need real batches: full ones together, the smaller last one alone.
    full = (n // size) * size if bn_batch else n
    counts, sizes = [], []
    if full:
      nb = -(-full // size)
      pad = nb * size - full
      x = np.concatenate([images[:full], np.zeros((pad,) + images.shape[1:], images.dtype)])
      y = np.concatenate([labels[:full], np.zeros((pad,), labels.dtype)])
      valid = np.arange(nb * size) < full
      counts += list(per_batch(params, batch_stats, x.reshape(nb, size, *x.shape[1:]), y.reshape(nb, size),
                               valid.reshape(nb, size), task_id))
      sizes += list(valid.reshape(nb, size).sum(1))
    if full < n:
      counts += list(per_batch(params, batch_stats, images[None, full:], labels[None, full:],
                               np.ones((1, n - full), bool), task_id))
      sizes.append(n - full)
    counts, sizes = np.asarray(counts, float), np.asarray(sizes, float)
    return float(100.0 * (np.mean(counts / sizes) if batch_mean else counts.sum() / n))

  return evaluate


# --------------------------------------------------------------------------- the task loop


def pad_to(x: np.ndarray, size: int) -> np.ndarray:
  return np.concatenate([x, np.zeros((size - len(x),) + x.shape[1:], x.dtype)]) if len(x) < size else x


@dataclasses.dataclass(frozen=True)
class SeedAxis:
  """The runs the task loop trains at once: one seed (n = 1: plain arrays, a separate run), or n
  seeds as one program (parallel seeds: every array of the state, the task's data and the
  step's metrics gains a leading seed axis, and the step is vmapped over it)."""

  n: int

  def split(self, tree) -> list:
    """Each seed's part of `tree`."""
    if self.n == 1:
      return [tree]
    return [jax.tree_util.tree_map(lambda x, i=i: x[i], tree) for i in range(self.n)]

  def join(self, trees: list):
    """The seeds' trees as one (the inverse of `split`)."""
    if self.n == 1:
      return trees[0]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)

  def first(self, x) -> int:
    return int(x if self.n == 1 else x[0])


@dataclasses.dataclass
class _Run:
  """What the task loop needs besides the train state (built once per process). Lists hold one
  entry per seed."""

  configs: list
  tasks: list  # data_lib.TaskSequence per seed
  method: base.Method  # the first seed's: no method function closes over a seed's data
  train_sets: list  # per seed, per task (uint8 images, labels) (joint: the union, at the last task)
  padded_size: int  # every task's arrays are padded to this, so shapes never change
  seeds: SeedAxis
  begin_task: Callable
  end_task: Callable
  train_chunk: Callable
  evaluate: Callable
  mesh: "jax.sharding.Mesh"
  ckpts: list
  writers: list
  progress: reporting.Progress
  stop: checkpointing.StopRequests
  seconds: Callable[[], float]

  def save(self, state: TrainState, position: checkpointing.Position, acc: np.ndarray) -> None:
    for i, s in enumerate(self.seeds.split(state)):
      save_checkpoint(self.ckpts[i], s, self.configs[i], self.tasks[i], position, acc[i], self.seconds())

  def num_train(self, task_id: int) -> int:
    return len(self.train_sets[0][task_id][1])

  def task_arrays(self, task_id: int):
    """Task `task_id`'s training sets on the device(s), padded to the common size."""
    padded = [(pad_to(x, self.padded_size), pad_to(y, self.padded_size)) for x, y in
              (sets[task_id] for sets in self.train_sets)]
    return sharding.replicate(self.seeds.join(padded) if self.seeds.n == 1 else
                              tuple(np.stack(parts) for parts in zip(*padded)), self.mesh)


def use_compilation_cache(path: str) -> None:
  """Keeps every program this process compiles in `path` (train.compilation_cache; "" = off)
  and reuses the ones earlier runs left there. JAX keys an entry by the whole program (closed-
  over constants included), backend, versions and flags, so only an identical program is
  reused: a rerun, a resume, another seed. A process-wide setting, so entry points call it
  (the command line, the benchmark), not the library; JAX reads it when the process compiles
  its first program, and later changes do nothing."""
  if path:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    # Every program of a run, not only those compiling longer than JAX's default 1 s: a run
    # compiles a few dozen, and on a CPU most take under a second.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes, or re-reports) the whole task sequence; returns the results dict."""
  return train_seeds(config, [config.seed], [workdir])[0]


def seed_workdirs(workdir: str, seeds) -> list[str]:
  """Where parallel seeds write: <workdir>/seed_<n>, each what a separate run would write."""
  return [os.path.join(workdir, f"seed_{s}") for s in seeds]


def train_seeds(config: ml_collections.ConfigDict, seeds, workdirs) -> list[dict]:
  """Trains (or resumes, or re-reads) `config` for every seed in `seeds`, all as one program
  (`SeedAxis`); returns each seed's results dict, in order. `workdirs[i]` is seed `seeds[i]`'s
  workdir and holds exactly what a separate run of that seed writes, so a seed's directory
  can be resumed or re-read alone. `seconds` in each results.json is the wall time of the
  whole program.

  Several seeds cost memory (S states and S copies of a task's training arrays). vmap turns
  each convolution into a grouped one over the seeds: an accelerator runs that as one wide
  kernel where a small-batch run alone leaves most of it idle; XLA's CPU backend runs grouped
  convolutions slowly (experiments/results/parallel_seeds_fmnist.md): use it on GPUs and TPUs.
  Batched convolutions also sum in another order than single ones, so over a whole run the
  seeds' results differ from their separate runs by run-to-run noise, not exactly.
  """
  seeds, workdirs = [int(s) for s in seeds], list(workdirs)
  if len(set(seeds)) != len(seeds) or len(seeds) != len(workdirs):
    raise errors.UserError(f"parallel seeds need distinct seeds, one workdir each (got seeds {seeds})")
  configs = []
  for s in seeds:
    c = copy.deepcopy(config)
    c.seed = s
    config_check.validate(c)
    configs.append(c)
  with contextlib.ExitStack() as context:
    ckpts = [context.enter_context(checkpointing.Checkpointer(w, keep=config.train.keep_checkpoints))
             for w in workdirs]
    if distributed.is_main():  # one lock per workdir, held by the process that writes its files
      for ckpt in ckpts:
        context.enter_context(ckpt.locked())
    stop = context.enter_context(checkpointing.StopRequests())
    metas = [ckpt.latest_meta() for ckpt in ckpts]
    for meta, c in zip(metas, configs):
      if meta is not None:
        config_check.check_same_config(meta["config"], c)
    if all(m is not None and m["position"]["task"] == m["num_tasks"] and os.path.exists(ck.results_path)
           for m, ck in zip(metas, ckpts)):
      results = [reporting.read_results(ck.results_path) for ck in ckpts]
      if len(results) == 1:
        print(reporting.format_table(np.asarray(results[0]["accuracy_matrix"], float), results_summary(results[0])))
      return results
    if len({None if m is None else tuple(m["position"].values()) for m in metas}) > 1:
      raise errors.UserError(f"the workdirs of seeds {seeds} stand at different points: resume them as "
                             "separate runs, or use new workdirs")
    return _train(configs, ckpts, metas, stop)


def make_setup(config: ml_collections.ConfigDict, tasks: data_lib.TaskSequence) -> base.Setup:
  """What a method's builder needs to know of this config and task sequence."""
  nets = networks.build_networks(config, len(tasks.tasks), tasks.num_classes_per_task)
  return base.Setup(config=config, nets=nets, num_tasks=len(tasks.tasks), num_classes=tasks.num_classes_per_task,
                    image_shape=tuple(tasks.image_shape), mean=tuple(tasks.mean), std=tuple(tasks.std),
                    tasks=tasks)


def build_method(config: ml_collections.ConfigDict, tasks: data_lib.TaskSequence) -> base.Method:
  """The configured method for this task sequence."""
  return methods.build(make_setup(config, tasks))


def training_sets(method: base.Method, tasks: data_lib.TaskSequence) -> list:
  """Per task, the (images, labels) it trains on. Joint training: every task's examples at the
  last task, with labels task * C + label (earlier entries empty)."""
  sets = [(t.x_train, t.y_train) for t in tasks.tasks]
  if method.removed_from_training is not None:
    sets = [(np.delete(x, r, 0), np.delete(y, r, 0)) for (x, y), r in zip(sets, method.removed_from_training)]
  if method.joint:
    c = tasks.num_classes_per_task
    union = (np.concatenate([x for x, _ in sets]),
             np.concatenate([k * c + y.astype(np.int64) for k, (_, y) in enumerate(sets)]).astype(np.int32))
    sets = [(x[:0], y[:0]) for x, y in sets[:-1]] + [union]
  return sets


def _check_same_shapes(seeds, tasks, train_sets) -> None:
  """One program over several seeds needs every seed's arrays in one shape; only the draw of
  examples may differ."""
  for name, get in (("training", lambda i, t: train_sets[i][t][1].shape),
                    ("test", lambda i, t: tasks[i].tasks[t].y_test.shape)):
    for t in range(len(tasks[0].tasks)):
      shapes = {get(i, t) for i in range(len(seeds))}
      if len(shapes) > 1:
        raise errors.UserError(f"seeds {seeds} give task {t} {name} sets of different sizes {sorted(shapes)}: "
                               "run them separately (train.parallel_seeds=1)")
  if len({(t.mean, t.std, t.image_shape) for t in tasks}) > 1:
    raise errors.UserError(f"seeds {seeds} normalise their data differently: run them separately")


def _train(configs: list, ckpts: list, metas: list, stop: checkpointing.StopRequests) -> list[dict]:
  config, seeds = configs[0], SeedAxis(len(configs))
  tasks = [data_lib.load_tasks(c.data, c.seed) for c in configs]
  for c, t in zip(configs, tasks):
    config_check.check_against_data(c, t)
  methods_ = [build_method(c, t) for c, t in zip(configs, tasks)]
  train_sets = [training_sets(m, t) for m, t in zip(methods_, tasks)]
  _check_same_shapes([c.seed for c in configs], tasks, train_sets)
  method, k_tasks = methods_[0], len(tasks[0].tasks)
  mesh = sharding.data_mesh()
  if config.train.batch_size % mesh.size:
    raise errors.UserError(f"config train.batch_size={config.train.batch_size} must be divisible by the "
                           f"{mesh.size} devices, which split every batch")
  if distributed.process_count() > 1 and distributed.is_main():
    print(f"{distributed.process_count()} processes, {mesh.size} devices: each batch of {config.train.batch_size} "
          "split over all of them", flush=True)
  states = [sharding.replicate(create_state(m, c), mesh) for m, c in zip(methods_, configs)]
  acc = np.full((seeds.n, k_tasks, k_tasks), np.nan)
  position = checkpointing.Position(task=0, epoch=0, batch=0)
  seconds_before = 0.0
  if metas[0] is not None:
    restored = [ckpt.restore(s) for ckpt, s in zip(ckpts, states)]
    states = [s for s, _ in restored]
    acc = np.stack([np.asarray(meta["accuracy_matrix"], float) for _, meta in restored])
    position = checkpointing.Position(**restored[0][1]["position"])
    seconds_before = max(meta["seconds"] for _, meta in restored)
  state = seeds.join(states)
  del states

  compiled = use_compiled_loops(config.train.loop)
  started = time.time()
  step = make_train_step(method, augment=config.train.augment, mean=tasks[0].mean, std=tasks[0].std, mesh=mesh)
  identity = lambda state, *unused: state
  run = _Run(
      configs=configs, tasks=tasks, method=method, train_sets=train_sets,
      padded_size=max(len(y) for _, y in train_sets[0]), seeds=seeds,
      # Around each task every seed runs the same compiled function in turn (not vmapped: each
      # seed's task-boundary work stays exactly what it is in a separate run).
      begin_task=jax.jit(method.begin_task or identity),
      end_task=jax.jit(method.end_task) if method.end_task else None,
      train_chunk=make_train_chunk(step, config.train.batch_size, compiled, method.metric_names,
                                   seeds=seeds.n > 1),
      evaluate=make_evaluate(method.logits, eval_settings(config, method), tasks[0].mean, tasks[0].std, mesh),
      mesh=mesh, ckpts=ckpts,
      writers=[reporting.MetricWriter(ck.tensorboard_dir) if distributed.is_main() else reporting.NoWriter()
               for ck in ckpts],
      progress=reporting.Progress(k_tasks, show=distributed.is_main()), stop=stop,
      seconds=lambda: seconds_before + time.time() - started)
  try:
    for task_id in range(position.task, k_tasks):
      if not run.num_train(task_id):  # joint training: nothing to train or score before the last task
        continue
      state = _train_task(run, state, task_id, position, acc)
      per_seed = seeds.split(state)
      for i, s in enumerate(per_seed):
        summary = score_task(run.evaluate, s, configs[i], tasks[i], task_id, acc[i], method.joint)
        run.writers[i].scalars(int(s.step), task_scalars(acc[i], task_id, summary))
      # Every seed has the same entries filled: the mean over seeds keeps NaN where all are.
      run.progress.end_task(task_id, acc[:, task_id, :task_id + 1].mean(0),
                            metrics_lib.summarize(acc.mean(0), upto=task_id))
      if method.end_task is not None:  # only then are the task's arrays needed again
        images, labels = run.task_arrays(task_id)
        per_seed = [run.end_task(s, x, y, run.num_train(task_id), task_id)
                    for s, x, y in zip(per_seed, seeds.split(images), seeds.split(labels))]
        state = seeds.join(per_seed)
      del per_seed
      position = checkpointing.Position(task=task_id + 1, epoch=0, batch=0)
      run.save(state, position, acc)
      stop.agree()
      stop.raise_if_requested(position)
  finally:
    run.progress.close()
    for w in run.writers:
      w.close()

  return [write_results(ckpts[i], configs[i], tasks[i], acc[i], run.seconds(), show=seeds.n == 1)
          for i in range(seeds.n)]


def save_checkpoint(ckpt: checkpointing.Checkpointer, state: TrainState, config, tasks: data_lib.TaskSequence,
                    position: checkpointing.Position, acc: np.ndarray, seconds: float) -> None:
  """The state and where the run stands (resume point, accuracy matrix, wall time, config)."""
  ckpt.save(state, {"position": dataclasses.asdict(position), "accuracy_matrix": reporting.jsonable(acc),
                    "seconds": seconds, "num_tasks": len(tasks.tasks), "config": reporting.jsonable(config),
                    "class_order": list(tasks.class_order)})


def score_task(evaluate: Callable, state: TrainState, config, tasks: data_lib.TaskSequence, task_id: int,
               acc: np.ndarray, joint: bool) -> dict:
  """Fills row `task_id` of the accuracy matrix (every task for joint training, else tasks
  0..task_id) and returns the summary metrics so far."""
  scored = range(len(tasks.tasks)) if joint else range(task_id + 1)
  acc[task_id, list(scored)] = [evaluate(state.params, state.batch_stats, tasks.tasks[j].x_test,
                                         tasks.tasks[j].y_test, j, config.seed) for j in scored]
  return metrics_lib.summarize(acc, upto=task_id)


def task_scalars(acc: np.ndarray, task_id: int, summary: dict) -> dict:
  return ({f"test/task_{j}": acc[task_id, j] for j in range(task_id + 1)}
          | {f"test/{k}": v for k, v in summary.items() if np.isfinite(v)})


def write_results(ckpt: checkpointing.Checkpointer, config, tasks: data_lib.TaskSequence, acc: np.ndarray,
                  seconds: float, show: bool = True) -> dict:
  """results.json and the plots of a finished run (process 0 writes them, every process reads
  them back); prints the final table (with `show`)."""
  summary = metrics_lib.summarize(acc)
  if distributed.is_main():
    extra = {"class_order": list(tasks.class_order), "num_tasks": len(tasks.tasks),
             "classes_per_task": tasks.num_classes_per_task, "method": config.method}
    reporting.write_results_json(ckpt.results_path, acc, summary, config, seconds, extra=extra)
    reporting.plot_accuracy_matrix(ckpt.path("accuracy_matrix.png"), acc)
    reporting.plot_task_curves(ckpt.path("task_accuracy.png"), acc)
    if show:
      print(reporting.format_table(acc, summary))
  distributed.barrier(f"results {ckpt.workdir}")
  return reporting.read_results(ckpt.results_path)


def evaluation_batch_stats(config: ml_collections.ConfigDict, method: base.Method) -> bool:
  """Whether evaluation normalises with batch statistics: the method's override (joint), else
  model.eval_batch_norm, else model.batch_norm."""
  return (method.eval_batch_norm or config.model.eval_batch_norm or config.model.batch_norm) == "batch"


def _train_task(run: _Run, state: TrainState, task_id: int, position: checkpointing.Position,
                acc: np.ndarray) -> TrainState:
  """Trains task `task_id` from `position` (its start, or where a checkpoint left it), every
  seed at once.

  Saves a checkpoint every `train.checkpoint_every_steps` steps and when a stop is requested
  (SIGINT/SIGTERM), then raises `Stopped`; the task-end checkpoint is the caller's.
  """
  cfg, seeds = run.configs[0].train, run.seeds
  n_train = run.num_train(task_id)
  steps_per_epoch = n_train // cfg.batch_size
  images, labels = run.task_arrays(task_id)
  fresh = position.task != task_id or (position.epoch == 0 and position.batch == 0)
  if fresh:
    state = seeds.join([run.begin_task(s, task_id) for s in seeds.split(state)])
    position = checkpointing.Position(task_id, 0, 0)
  total = cfg.epochs * steps_per_epoch
  start = position.epoch * steps_per_epoch + position.batch  # the task's steps already done
  run.progress.start_task(task_id, total, done=start)
  step = seeds.first(state.step)
  num_valid = n_train if seeds.n == 1 else jnp.full((seeds.n,), n_train, jnp.int32)
  every = cfg.checkpoint_every_steps
  plan = chunk_plan(start, total, min(cfg.log_every_steps, steps_per_epoch), every, step)
  for first, n in plan:
    t0 = time.time()
    state, chunk_metrics = run.train_chunk(state, images, labels, num_valid, task_id, first, n)
    chunk_metrics = jax.device_get(chunk_metrics)
    done, step = first + n, step + n
    rate = n * cfg.batch_size * seeds.n / max(time.time() - t0, 1e-9)
    epoch, batch = epoch_and_batch(done, steps_per_epoch)
    check_finite(chunk_metrics, task_id, epoch, batch)
    rate_name = "train/images_per_second" if seeds.n == 1 else "train/images_per_second_all_seeds"
    for i, w in enumerate(run.writers):
      w.scalars(step, {f"train/{k}": float(seeds.split(v)[i]) for k, v in chunk_metrics.items()}
                | {rate_name: rate, "train/task": task_id})
    run.progress.advance(n, epoch, {k: float(np.mean(v)) for k, v in chunk_metrics.items()})
    if done < total and ((every and step % every == 0) or run.stop.agree()):
      here = checkpointing.Position(task_id, *divmod(done, steps_per_epoch))
      run.save(state, here, acc)
      run.stop.raise_if_requested(here)
  return state


def epoch_and_batch(done: int, steps_per_epoch: int) -> tuple[int, int]:
  """After `done` steps of a task: the epoch of the last one and the steps done in that epoch."""
  epoch, batch = divmod(done - 1, steps_per_epoch)
  return epoch, batch + 1


def check_finite(metrics: dict, task: int, epoch: int, batch: int) -> None:
  bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
  if bad:
    raise errors.UserError(
        f"non-finite {', '.join(bad)} in task {task}, epoch {epoch}, before step {batch} of the epoch: "
        "lower the learning rates; the checkpoint of the last finished task is kept")


def results_summary(results: dict) -> dict:
  return {k: results[k] for k in ("average_accuracy", "forgetting", "bwt")}
