"""Continual training of PAH: the train state, the two-phase jitted step, the task loop.

`train_and_evaluate(config, workdir)` is the whole job of the command line: load the task
sequence, train task after task, fill the accuracy matrix, checkpoint at every task end,
resume from the newest checkpoint, write results, plots and TensorBoard scalars.
"""

import dataclasses
import functools
import os
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from pah_jax import checkpointing
from pah_jax import config_check
from pah_jax import data as data_lib
from pah_jax import errors
from pah_jax import images as images_lib
from pah_jax import losses
from pah_jax import metrics as metrics_lib
from pah_jax import optim
from pah_jax import pah
from pah_jax import pretrained
from pah_jax import prototypes as prototypes_lib
from pah_jax import reporting
from pah_jax import sharding


@flax.struct.dataclass
class TrainState:
  """Everything that changes during a run, as one pytree (checkpointed whole)."""

  step: jax.Array  # global step over the whole task sequence
  params: Any  # {"backbone", "hypernet", "prototypes"}
  batch_stats: Any  # running statistics: updated by the current model's training batches only
  opt_state: Any  # main AdamW (backbone, hypernet, prototypes)
  proto_opt_state: Any  # prototype-only AdamW of the L_sp phase
  old_params: Any  # the model frozen at the end of the previous task (teacher)
  old_batch_stats: Any
  teacher_proto_logits: jax.Array  # (K, C, C): old model on old prototypes, fixed for a task
  rng: jax.Array  # root PRNG key of the run


@dataclasses.dataclass(frozen=True)
class StepSettings:
  """Static settings of the train step, closed over before jit (never a ConfigDict)."""

  lambda_sm: float
  lambda_sp: float
  temperature: float
  kl_direction: str
  old_task_reduction: str
  official_prototype_update: bool
  augment: bool
  mean: tuple[float, ...]
  std: tuple[float, ...]

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, mean, std) -> "StepSettings":
    p = config.pah
    return cls(p.lambda_sm, p.lambda_sp, p.temperature, p.kl_direction, p.old_task_reduction,
               p.prototype_update == "official", config.train.augment, tuple(mean), tuple(std))


# --------------------------------------------------------------------------- state


def create_state(nets: pah.Networks, config: ml_collections.ConfigDict, init_prototypes: np.ndarray,
                 image_shape) -> TrainState:
  rng = jax.random.PRNGKey(config.seed)
  # Compiled as one program: run op by op, the initialisers cost ~20 s of compiles on a CPU.
  # Optimising that run-once program is not worth its compile time on CPU either.
  init = functools.partial(pah.init_params, nets, image_shape=image_shape)
  if not isinstance(init_prototypes, jax.core.Tracer):  # not already inside someone's jit
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
    init = jax.jit(init, compiler_options=options)
  params, batch_stats = init(jax.random.fold_in(rng, 0), jnp.asarray(init_prototypes))
  params, batch_stats = pretrained.load_from_config(config.model, params, batch_stats)
  k, c = nets.num_tasks, nets.num_classes
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
      opt_state=optim.main_optimizer(config.optim).init(params),
      proto_opt_state=optim.prototype_optimizer(config.optim).init(params),
      old_params=params, old_batch_stats=batch_stats,
      teacher_proto_logits=jnp.zeros((k, c, c), jnp.float32), rng=rng)


def make_begin_task(nets: pah.Networks, init_prototypes: np.ndarray) -> Callable:
  """Before task k: P_k gets its initial value (prototypes of unseen tasks only receive weight
  decay until then, which this undoes), and the teacher's prototype logits f_{k-1}(P_j | j) are
  computed once, since the frozen old model and old prototypes do not change during task k."""
  init = jnp.asarray(init_prototypes)

  @jax.jit
  def begin_task(state: TrainState, task_id) -> TrainState:
    protos = state.params["prototypes"].at[task_id].set(init[task_id])
    params = {**state.params, "prototypes": protos}
    teacher = pah.prototype_logits(nets, state.old_params, state.old_batch_stats,
                                   batch_statistics=nets.prototype_batch_stats)
    return state.replace(params=params, teacher_proto_logits=teacher)

  return begin_task


def end_task(state: TrainState) -> TrainState:
  """Freezes the current model as the old model (arrays are immutable: no copy needed)."""
  return state.replace(old_params=state.params, old_batch_stats=state.batch_stats)


# --------------------------------------------------------------------------- the step


# What every train step reports (averaged per chunk, written to TensorBoard).
STEP_METRICS = ("loss", "loss_hm", "loss_sm", "loss_sp", "train_accuracy")


def make_train_step(nets: pah.Networks, settings: StepSettings, main_opt: optax.GradientTransformation,
                    proto_opt: optax.GradientTransformation, mesh=None) -> Callable:
  """One PAH step on a uint8 batch of task `task_id` (a traced int: compiled once per run).

  Phase 1 (eq. 6 without L_sp): L_hm + lambda_sm L_sm updates backbone, hypernetwork and
  prototypes. Phase 2: L_sp, evaluated at the parameters after phase 1 (as the official code,
  which steps its main optimiser first), updates only the prototypes.
  """
  s = settings
  distill = functools.partial(losses.distill_old_tasks, temperature=s.temperature,
                              direction=s.kl_direction, reduction=s.old_task_reduction)

  def step(state: TrainState, images_u8, labels, task_id):
    if mesh is not None:  # batch split over devices; BatchNorm and gradients stay global
      images_u8, labels = sharding.split_batch(images_u8, mesh), sharding.split_batch(labels, mesh)
    if s.augment:
      # Streams of the root key: 0 initialisation, 1 data order, 2 augmentation.
      images_u8 = images_lib.random_crop_flip(jax.random.fold_in(jax.random.fold_in(state.rng, 2), state.step),
                                              images_u8)
    images = images_lib.normalize(images_u8, s.mean, s.std)
    old_mask = jnp.arange(nets.num_tasks) < task_id

    # Teacher: the frozen old model on the current images, all old heads from one pass.
    teacher_logits, _ = pah.image_logits(nets, state.old_params, state.old_batch_stats, images,
                                         batch_statistics=nets.teacher_batch_stats)

    def main_loss(params):
      logits, new_stats = pah.image_logits(nets, params, state.batch_stats, images, batch_statistics=True)
      current = logits[task_id]
      l_hm = losses.cross_entropy(current, labels)
      l_sm = distill(logits, teacher_logits, old_mask)
      accuracy = jnp.mean(jnp.argmax(current, -1) == labels)
      return l_hm + s.lambda_sm * l_sm, (new_stats, l_hm, l_sm, accuracy)

    (loss, (batch_stats, l_hm, l_sm, accuracy)), grads = jax.value_and_grad(main_loss, has_aux=True)(state.params)
    updates, opt_state = main_opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    def prototype_loss(params):
      student = pah.prototype_logits(nets, params, batch_stats, batch_statistics=nets.prototype_batch_stats)
      return distill(student, state.teacher_proto_logits, old_mask)

    l_sp, sp_grads = jax.value_and_grad(prototype_loss)(params)
    sp_grads = jax.tree_util.tree_map(lambda g: s.lambda_sp * g, sp_grads)
    if s.official_prototype_update:
      # The official code never zeroes the prototype gradient between its two backward passes.
      sp_grads = jax.tree_util.tree_map(jnp.add, sp_grads, grads)
    proto_updates, proto_opt_state = proto_opt.update(sp_grads, state.proto_opt_state, params)
    params = optax.apply_updates(params, proto_updates)

    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, proto_opt_state=proto_opt_state)
    metrics = {"loss": loss + s.lambda_sp * l_sp, "loss_hm": l_hm, "loss_sm": l_sm, "loss_sp": l_sp,
               "train_accuracy": accuracy}
    return new_state, {k: metrics[k].astype(jnp.float32) for k in STEP_METRICS}

  return step


def epoch_permutation(key, num_valid, size: int):
  """A random order of the first `num_valid` of `size` (padded) examples, traced num_valid."""
  scores = jax.random.uniform(key, (size,))
  return jnp.argsort(jnp.where(jnp.arange(size) < num_valid, scores, 2.0))


def use_compiled_loops(loop: str) -> bool:
  """Whether epochs and evaluation run as compiled loops (`lax.fori_loop` / `lax.map`).

  On GPU and TPU a compiled loop removes all per-step Python and host work. XLA's CPU backend,
  however, runs convolutions inside a rolled loop 4.7-15x slower than the same step compiled
  alone (measured on 2 cores: 4 s vs 0.28 s and 522 ms vs 110 ms for two ResNet-18 width-0.25
  PAH steps), so "auto" drives steps from Python on CPU; the data stay device-resident.
  """
  if loop == "auto":
    return jax.default_backend() != "cpu"
  return loop == "compiled"


def make_train_chunk(step: Callable, batch_size: int, compiled: bool) -> Callable:
  """Runs `num_batches` steps of an epoch, starting at batch `first_batch`, on device-resident data.

  The epoch's order is a permutation drawn from (task, epoch), so it is the same whenever
  the chunk runs: a resumed run sees exactly the data order of an uninterrupted one.
  Returns the new state and the metrics averaged over the chunk.
  """

  def batch_at(images, labels, perm, b):
    idx = jax.lax.dynamic_slice(perm, (b * batch_size,), (batch_size,))
    return images[idx], labels[idx]

  def permutation(state, size, num_valid, task_id, epoch):
    key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(state.rng, 1), task_id), epoch)
    return epoch_permutation(key, num_valid, size)

  @functools.partial(jax.jit, donate_argnums=(0,))
  def compiled_chunk(state: TrainState, images, labels, num_valid, task_id, epoch, first_batch, num_batches):
    perm = permutation(state, images.shape[0], num_valid, task_id, epoch)
    sums = {name: jnp.zeros((), jnp.float32) for name in STEP_METRICS}

    def body(i, carry):
      state, sums = carry
      state, metrics = step(state, *batch_at(images, labels, perm, first_batch + i), task_id)
      return state, jax.tree_util.tree_map(jnp.add, sums, metrics)

    state, sums = jax.lax.fori_loop(0, num_batches, body, (state, sums))
    return state, jax.tree_util.tree_map(lambda x: x / jnp.maximum(num_batches, 1), sums)

  if compiled:
    return compiled_chunk

  jit_permutation = jax.jit(permutation, static_argnums=(1,))

  @functools.partial(jax.jit, donate_argnums=(0,))
  def one_step(state: TrainState, images, labels, perm, task_id, b):
    return step(state, *batch_at(images, labels, perm, b), task_id)

  def python_chunk(state: TrainState, images, labels, num_valid, task_id, epoch, first_batch, num_batches):
    perm = jit_permutation(state, images.shape[0], num_valid, task_id, epoch)
    sums = None
    for b in range(first_batch, first_batch + num_batches):
      state, metrics = one_step(state, images, labels, perm, task_id, b)
      sums = metrics if sums is None else jax.tree_util.tree_map(jnp.add, sums, metrics)
    return state, jax.tree_util.tree_map(lambda x: x / num_batches, sums)

  return python_chunk


# --------------------------------------------------------------------------- evaluation


def make_evaluate(nets: pah.Networks, mean, std, eval_batch_size: int, batch_size: int,
                  compiled: bool, mesh=None, batch_mean: bool = False) -> Callable:
  """Test accuracy (%) of task `task_id` with that task's generated head.

  Running statistics: fixed-size padded batches. Batch statistics (official): the official
  protocol's shuffled batches of `batch_size` (the last one smaller), since each batch's own
  statistics normalise it. The accuracy is over examples, or with `batch_mean` the mean of
  the per-batch accuracies, as the official code reports it.
  """
  bn_batch = nets.eval_batch_stats

  def correct(params, batch_stats, images_u8, labels, valid, task_id):
    if mesh is not None and images_u8.shape[0] % mesh.size == 0:
      images_u8 = sharding.split_batch(images_u8, mesh)
    logits = pah.task_logits(nets, params, batch_stats, images_lib.normalize(images_u8, mean, std),
                             task_id, batch_statistics=bn_batch)
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


def _pad_to(x: np.ndarray, size: int) -> np.ndarray:
  return np.concatenate([x, np.zeros((size - len(x),) + x.shape[1:], x.dtype)]) if len(x) < size else x


@dataclasses.dataclass
class _Run:
  """What the task loop needs besides the train state (built once per process)."""

  config: ml_collections.ConfigDict
  tasks: data_lib.TaskSequence
  train_sets: list  # [(uint8 images, labels)] per task, init images removed where configured
  padded_size: int  # every task's arrays are padded to this, so shapes never change
  begin_task: Callable
  train_chunk: Callable
  evaluate: Callable
  mesh: "jax.sharding.Mesh"
  ckpt: checkpointing.Checkpointer
  writer: reporting.MetricWriter
  progress: reporting.Progress
  stop: checkpointing.StopRequests
  seconds: Callable[[], float]

  def save(self, state: TrainState, position: checkpointing.Position, acc: np.ndarray) -> None:
    k = len(self.tasks.tasks)
    self.ckpt.save(state, {"position": dataclasses.asdict(position), "accuracy_matrix": reporting.jsonable(acc),
                           "seconds": self.seconds(), "num_tasks": k, "config": reporting.jsonable(self.config),
                           "class_order": list(self.tasks.class_order)})


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


def _train(config, ckpt: checkpointing.Checkpointer, stop: "checkpointing.StopRequests", resume: bool) -> dict:
  tasks_seq = data_lib.load_tasks(config.data, config.seed)
  config_check.check_against_data(config, tasks_seq)
  k_tasks, c = len(tasks_seq.tasks), tasks_seq.num_classes_per_task
  proto_channels = config.pah.prototype_channels or tasks_seq.image_shape[-1]
  init_protos, chosen = prototypes_lib.initial_prototypes(
      [t.x_train for t in tasks_seq.tasks], [t.y_train for t in tasks_seq.tasks], num_classes=c,
      size=config.pah.prototype_size, channels=proto_channels, init=config.pah.prototype_init,
      semantic_init=config.pah.semantic_init, mean=tasks_seq.mean, std=tasks_seq.std,
      random_mean=config.pah.random_init_mean, random_std=config.pah.random_init_std, seed=config.seed)
  train_sets = [(t.x_train, t.y_train) for t in tasks_seq.tasks]
  if config.pah.exclude_init_images and chosen is not None:
    train_sets = [(np.delete(x, chosen[k], 0), np.delete(y, chosen[k], 0)) for k, (x, y) in enumerate(train_sets)]

  nets = pah.build_networks(config, k_tasks, c)
  settings = StepSettings.from_config(config, tasks_seq.mean, tasks_seq.std)
  main_opt, proto_opt = optim.main_optimizer(config.optim), optim.prototype_optimizer(config.optim)
  mesh = sharding.data_mesh()
  if config.train.batch_size % mesh.size:
    raise errors.UserError(f"config train.batch_size={config.train.batch_size} must be divisible by the "
                           f"{mesh.size} devices, which split every batch")
  state = sharding.replicate(create_state(nets, config, init_protos, tasks_seq.image_shape), mesh)
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
  run = _Run(
      config=config, tasks=tasks_seq, train_sets=train_sets, padded_size=max(len(y) for _, y in train_sets),
      begin_task=make_begin_task(nets, init_protos),
      train_chunk=make_train_chunk(make_train_step(nets, settings, main_opt, proto_opt, mesh),
                                   config.train.batch_size, compiled),
      evaluate=make_evaluate(nets, tasks_seq.mean, tasks_seq.std, config.train.eval_batch_size,
                             config.train.batch_size, compiled, mesh,
                             batch_mean=config.train.eval_accuracy == "batch_mean"),
      mesh=mesh,
      ckpt=ckpt, writer=reporting.MetricWriter(ckpt.tensorboard_dir), progress=reporting.Progress(k_tasks),
      stop=stop, seconds=lambda: seconds_before + time.time() - started)
  try:
    for task_id in range(position.task, k_tasks):
      state = _train_task(run, state, task_id, position, acc)
      acc[task_id, :task_id + 1] = [
          run.evaluate(state.params, state.batch_stats, t.x_test, t.y_test, j, config.seed)
          for j, t in enumerate(tasks_seq.tasks[:task_id + 1])]
      summary = metrics_lib.summarize(acc, upto=task_id)
      run.writer.scalars(int(state.step), {f"test/task_{j}": acc[task_id, j] for j in range(task_id + 1)}
                         | {f"test/{k}": v for k, v in summary.items()})
      run.progress.end_task(task_id, acc[task_id, :task_id + 1], summary)
      state = end_task(state)
      position = checkpointing.Position(task=task_id + 1, epoch=0, batch=0)
      run.save(state, position, acc)
      stop.raise_if_requested(position)
  finally:
    run.progress.close()
    run.writer.close()

  summary = metrics_lib.summarize(acc)
  extra = {"class_order": list(tasks_seq.class_order), "num_tasks": k_tasks, "classes_per_task": c,
           "method": config.method}
  reporting.write_results_json(ckpt.results_path, acc, summary, config, run.seconds(), extra=extra)
  reporting.plot_accuracy_matrix(ckpt.path("accuracy_matrix.png"), acc)
  reporting.plot_task_curves(ckpt.path("task_accuracy.png"), acc)
  print(reporting.format_table(acc, summary))
  return reporting.read_results(ckpt.results_path)


def _train_task(run: _Run, state: TrainState, task_id: int, position: checkpointing.Position,
                acc: np.ndarray) -> TrainState:
  """Trains task `task_id` from `position` (its start, or where a checkpoint left it).

  Saves a checkpoint every `train.checkpoint_every_steps` steps and when a stop is requested
  (SIGINT/SIGTERM), then raises `Stopped`; the task-end checkpoint is the caller's.
  """
  cfg = run.config.train
  x_np, y_np = run.train_sets[task_id]
  steps_per_epoch = len(y_np) // cfg.batch_size
  images, labels = sharding.replicate((_pad_to(x_np, run.padded_size), _pad_to(y_np, run.padded_size)), run.mesh)
  fresh = position.task != task_id or (position.epoch == 0 and position.batch == 0)
  if fresh:
    state = run.begin_task(state, task_id)
    position = checkpointing.Position(task_id, 0, 0)
  run.progress.start_task(task_id, cfg.epochs * steps_per_epoch,
                          done=position.epoch * steps_per_epoch + position.batch)
  step = int(state.step)
  every = cfg.checkpoint_every_steps
  for epoch in range(position.epoch, cfg.epochs):
    batch = position.batch if epoch == position.epoch else 0
    while batch < steps_per_epoch:
      n = min(cfg.log_every_steps, steps_per_epoch - batch)
      if every:
        n = min(n, every - step % every)  # land exactly on checkpoint steps
      t0 = time.time()
      state, chunk_metrics = run.train_chunk(state, images, labels, len(y_np), task_id, epoch, batch, n)
      chunk_metrics = jax.device_get(chunk_metrics)
      batch, step = batch + n, step + n
      rate = n * cfg.batch_size / max(time.time() - t0, 1e-9)
      _check_finite(chunk_metrics, task_id, epoch, batch)
      run.writer.scalars(step, {f"train/{k}": float(v) for k, v in chunk_metrics.items()}
                         | {"train/images_per_second": rate, "train/task": task_id})
      run.progress.advance(n, epoch, chunk_metrics)
      last_of_task = epoch == cfg.epochs - 1 and batch == steps_per_epoch
      if not last_of_task and ((every and step % every == 0) or run.stop.requested):
        here = (checkpointing.Position(task_id, epoch + 1, 0) if batch == steps_per_epoch
                else checkpointing.Position(task_id, epoch, batch))
        run.save(state, here, acc)
        run.stop.raise_if_requested(here)
  return state


def _check_finite(metrics: dict, task: int, epoch: int, batch: int) -> None:
  bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
  if bad:
    raise errors.UserError(
        f"non-finite {', '.join(bad)} in task {task}, epoch {epoch}, before step {batch} of the epoch: "
        "lower the learning rates; the checkpoint of the last finished task is kept")


def results_summary(results: dict) -> dict:
  return {k: results[k] for k in ("average_accuracy", "forgetting", "bwt")}
