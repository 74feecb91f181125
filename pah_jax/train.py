"""Continual training, the same loop for every method: state, jitted steps, the task loop.

`train_and_evaluate(config, workdir)` is the whole job of the command line: load the task
sequence, build the configured method (`pah_jax.methods`), train task after task, fill the
accuracy matrix, checkpoint at every task end, resume from the newest checkpoint, write
results, plots and TensorBoard scalars.
"""

from collections.abc import Callable
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
from pah_jax import errors
from pah_jax import images as images_lib
from pah_jax import methods
from pah_jax.methods import base
from pah_jax import metrics as metrics_lib
from pah_jax import networks
from pah_jax import pretrained
from pah_jax import reporting
from pah_jax import sharding

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
  however, runs convolutions inside a rolled loop 4.7-15x slower than the same step compiled
  alone (measured on 2 cores: 4 s vs 0.28 s, 522 ms vs 110 ms, and 275 ms vs 30 ms with small
  maps as matrix products, for ResNet-18 width-0.25 PAH steps), so "auto" drives steps from
  Python on CPU; the data stay device-resident.
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

  seeds=True: several runs at once (`pah_jax.parallel_seeds`). State, images, labels and
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


def make_evaluate(logits_fn: Callable, bn_batch: bool, mean, std, eval_batch_size: int, batch_size: int,
                  compiled: bool, mesh=None, batch_mean: bool = False) -> Callable:
  """Test accuracy (%) of task `task_id` with that task's head (`logits_fn` = Method.logits;
  `bn_batch`: BatchNorm with batch statistics, else running statistics).

  Running statistics: fixed-size padded batches. Batch statistics (official): the official
  protocol's shuffled batches of `batch_size` (the last one smaller), since each batch's own
  statistics normalise it. The accuracy is over examples, or with `batch_mean` the mean of
  the per-batch accuracies, as the official code reports it.
  """
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


@dataclasses.dataclass
class _Run:
  """What the task loop needs besides the train state (built once per process)."""

  config: ml_collections.ConfigDict
  tasks: data_lib.TaskSequence
  method: base.Method
  train_sets: list  # [(uint8 images, labels)] per task (joint: the union, at the last task)
  padded_size: int  # every task's arrays are padded to this, so shapes never change
  begin_task: Callable
  end_task: Callable
  train_chunk: Callable
  evaluate: Callable
  mesh: "jax.sharding.Mesh"
  ckpt: checkpointing.Checkpointer
  writer: reporting.MetricWriter
  progress: reporting.Progress
  stop: checkpointing.StopRequests
  seconds: Callable[[], float]

  def save(self, state: TrainState, position: checkpointing.Position, acc: np.ndarray) -> None:
    save_checkpoint(self.ckpt, state, self.config, self.tasks, position, acc, self.seconds())

  def task_arrays(self, task_id: int):
    """Task `task_id`'s training set on the device(s), padded to the common size."""
    x, y = self.train_sets[task_id]
    return sharding.replicate((pad_to(x, self.padded_size), pad_to(y, self.padded_size)), self.mesh)


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
  config_check.validate(config)
  ckpt = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  with ckpt, ckpt.locked(), checkpointing.StopRequests() as stop:
    meta = ckpt.latest_meta()
    if meta is not None:
      config_check.check_same_config(meta["config"], config)
      if meta["position"]["task"] == meta["num_tasks"] and os.path.exists(ckpt.results_path):
        results = reporting.read_results(ckpt.results_path)
        print(reporting.format_table(np.asarray(results["accuracy_matrix"], float), results_summary(results)))
        return results
    return _train(config, ckpt, stop, resume=meta is not None)


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


def _train(config, ckpt: checkpointing.Checkpointer, stop: "checkpointing.StopRequests", resume: bool) -> dict:
  tasks_seq = data_lib.load_tasks(config.data, config.seed)
  config_check.check_against_data(config, tasks_seq)
  k_tasks = len(tasks_seq.tasks)
  method = build_method(config, tasks_seq)
  train_sets = training_sets(method, tasks_seq)
  mesh = sharding.data_mesh()
  if config.train.batch_size % mesh.size:
    raise errors.UserError(f"config train.batch_size={config.train.batch_size} must be divisible by the "
                           f"{mesh.size} devices, which split every batch")
  state = sharding.replicate(create_state(method, config), mesh)
  acc = np.full((k_tasks, k_tasks), np.nan)
  position = checkpointing.Position(task=0, epoch=0, batch=0)
  seconds_before = 0.0
  if resume:
    state, meta = ckpt.restore(state)
    acc = np.asarray(meta["accuracy_matrix"], float)
    position = checkpointing.Position(**meta["position"])
    seconds_before = meta["seconds"]

  compiled = use_compiled_loops(config.train.loop)
  started = time.time()
  step = make_train_step(method, augment=config.train.augment, mean=tasks_seq.mean, std=tasks_seq.std, mesh=mesh)
  identity = lambda state, *unused: state
  run = _Run(
      config=config, tasks=tasks_seq, method=method, train_sets=train_sets,
      padded_size=max(len(y) for _, y in train_sets),
      begin_task=jax.jit(method.begin_task or identity),
      end_task=jax.jit(method.end_task) if method.end_task else None,
      train_chunk=make_train_chunk(step, config.train.batch_size, compiled, method.metric_names),
      evaluate=make_task_evaluate(config, method, tasks_seq, compiled, mesh),
      mesh=mesh,
      ckpt=ckpt, writer=reporting.MetricWriter(ckpt.tensorboard_dir), progress=reporting.Progress(k_tasks),
      stop=stop, seconds=lambda: seconds_before + time.time() - started)
  try:
    for task_id in range(position.task, k_tasks):
      if not len(train_sets[task_id][1]):  # joint training: nothing to train or score before the last task
        continue
      state = _train_task(run, state, task_id, position, acc)
      summary = score_task(run.evaluate, state, config, tasks_seq, task_id, acc, method.joint)
      run.writer.scalars(int(state.step), task_scalars(acc, task_id, summary))
      run.progress.end_task(task_id, acc[task_id, :task_id + 1], summary)
      if method.end_task is not None:  # only then are the task's arrays needed again
        images, labels = run.task_arrays(task_id)
        state = run.end_task(state, images, labels, len(train_sets[task_id][1]), task_id)
      position = checkpointing.Position(task=task_id + 1, epoch=0, batch=0)
      run.save(state, position, acc)
      stop.raise_if_requested(position)
  finally:
    run.progress.close()
    run.writer.close()

  return write_results(ckpt, config, tasks_seq, acc, run.seconds())


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
                  seconds: float) -> dict:
  """results.json and the plots of a finished run; prints the final table."""
  summary = metrics_lib.summarize(acc)
  extra = {"class_order": list(tasks.class_order), "num_tasks": len(tasks.tasks),
           "classes_per_task": tasks.num_classes_per_task, "method": config.method}
  reporting.write_results_json(ckpt.results_path, acc, summary, config, seconds, extra=extra)
  reporting.plot_accuracy_matrix(ckpt.path("accuracy_matrix.png"), acc)
  reporting.plot_task_curves(ckpt.path("task_accuracy.png"), acc)
  print(reporting.format_table(acc, summary))
  return reporting.read_results(ckpt.results_path)


def make_task_evaluate(config, method: base.Method, tasks: data_lib.TaskSequence, compiled: bool, mesh=None):
  """`make_evaluate` as the config asks for it (BatchNorm mode, batch sizes, accuracy protocol)."""
  return make_evaluate(method.logits, evaluation_batch_stats(config, method), tasks.mean, tasks.std,
                       config.train.eval_batch_size, config.train.batch_size, compiled, mesh,
                       batch_mean=config.train.eval_accuracy == "batch_mean")


def evaluation_batch_stats(config: ml_collections.ConfigDict, method: base.Method) -> bool:
  """Whether evaluation normalises with batch statistics: the method's override (joint), else
  model.eval_batch_norm, else model.batch_norm."""
  return (method.eval_batch_norm or config.model.eval_batch_norm or config.model.batch_norm) == "batch"


def _train_task(run: _Run, state: TrainState, task_id: int, position: checkpointing.Position,
                acc: np.ndarray) -> TrainState:
  """Trains task `task_id` from `position` (its start, or where a checkpoint left it).

  Saves a checkpoint every `train.checkpoint_every_steps` steps and when a stop is requested
  (SIGINT/SIGTERM), then raises `Stopped`; the task-end checkpoint is the caller's.
  """
  cfg = run.config.train
  y_np = run.train_sets[task_id][1]
  steps_per_epoch = len(y_np) // cfg.batch_size
  images, labels = run.task_arrays(task_id)
  fresh = position.task != task_id or (position.epoch == 0 and position.batch == 0)
  if fresh:
    state = run.begin_task(state, task_id)
    position = checkpointing.Position(task_id, 0, 0)
  total = cfg.epochs * steps_per_epoch
  start = position.epoch * steps_per_epoch + position.batch  # the task's steps already done
  run.progress.start_task(task_id, total, done=start)
  step = int(state.step)
  every = cfg.checkpoint_every_steps
  plan = chunk_plan(start, total, min(cfg.log_every_steps, steps_per_epoch), every, step)
  for first, n in plan:
    t0 = time.time()
    state, chunk_metrics = run.train_chunk(state, images, labels, len(y_np), task_id, first, n)
    chunk_metrics = jax.device_get(chunk_metrics)
    done, step = first + n, step + n
    rate = n * cfg.batch_size / max(time.time() - t0, 1e-9)
    epoch, batch = epoch_and_batch(done, steps_per_epoch)
    check_finite(chunk_metrics, task_id, epoch, batch)
    run.writer.scalars(step, {f"train/{k}": float(v) for k, v in chunk_metrics.items()}
                       | {"train/images_per_second": rate, "train/task": task_id})
    run.progress.advance(n, epoch, chunk_metrics)
    if done < total and ((every and step % every == 0) or run.stop.requested):
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
