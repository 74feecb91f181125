"""Several seeds of one config trained as one compiled program (`train.parallel_seeds`).

The seeds' TrainStates are stacked on a leading seed axis and the loop's step is `jax.vmap`ped
over it (`train.make_train_chunk(seeds=True)`): one program per step updates every seed. Each
seed keeps what makes it that seed in a separate run: its draw of the data (class order,
subsample), its initialisation and initial prototypes, its data order and augmentation keys.
What runs per seed, on slices of the stack, is the rare work that closes over per-seed data:
`begin_task`/`end_task` and test-set evaluation. The program runs on one device (the seed
axis is not combined with the data mesh of multi-device training) and checkpoints at task ends
only; a stop request (SIGINT/SIGTERM) is honoured when the current task ends.

Every seed writes the workdir its separate run would (`<workdir>/seed_<n>`: checkpoints at
each task end, results.json, plots, TensorBoard), so the results are read, compared and
re-reported like separate runs, and a seed's directory can be resumed alone. `seconds` in
each results.json is the wall time of the whole parallel program.

The price is memory (S states and S copies of a task's training arrays). vmap turns each
convolution into a grouped one over the seeds: an accelerator runs that as one wide kernel,
where a small-batch run alone leaves most of the device idle; XLA's CPU backend runs grouped
convolutions slowly, and on a 2-core CPU 4 seeds in parallel took 2.3x the time of 4 separate
runs (experiments/results/parallel_seeds_fmnist.md): use it on GPUs and TPUs.
Batched convolutions also sum in another order than single ones. Over a few steps the seeds
match their separate runs exactly (tests/parallel_seeds_test.py); over a whole run the
rounding differences grow as any perturbation of SGD does, and accuracies differ by run-to-run
noise: at most 1.05 points in any accuracy-matrix entry and 0.23 in AA over 4 seeds of
Split-FashionMNIST, with the same mean (experiments/results/parallel_seeds_fmnist.md).
"""

import contextlib
import copy
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
from pah_jax import metrics as metrics_lib
from pah_jax import reporting
from pah_jax import train as train_lib


def seed_workdirs(workdir: str, seeds) -> list[str]:
  return [os.path.join(workdir, f"seed_{s}") for s in seeds]


def stack(trees):
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, n: int) -> list:
  return [jax.tree_util.tree_map(lambda x, i=i: x[i], tree) for i in range(n)]


def train_seeds(config: ml_collections.ConfigDict, seeds, workdirs) -> list[dict]:
  """Trains (or resumes, or re-reads) `config` for every seed in one program; returns each
  seed's results dict, in order. `workdirs[i]` is seed `seeds[i]`'s workdir."""
  seeds, workdirs = [int(s) for s in seeds], list(workdirs)
  if len(set(seeds)) != len(seeds) or len(seeds) != len(workdirs):
    raise errors.UserError(f"parallel seeds need distinct seeds, one workdir each (got seeds {seeds})")
  configs = []
  for s in seeds:
    c = copy.deepcopy(config)
    c.seed = s
    config_check.validate(c)
    configs.append(c)
  with contextlib.ExitStack() as stack_:
    ckpts = [stack_.enter_context(checkpointing.Checkpointer(w, keep=config.train.keep_checkpoints))
             for w in workdirs]
    for ckpt in ckpts:
      stack_.enter_context(ckpt.locked())
    stop = stack_.enter_context(checkpointing.StopRequests())
    metas = [ckpt.latest_meta() for ckpt in ckpts]
    for meta, c in zip(metas, configs):
      if meta is not None:
        config_check.check_same_config(meta["config"], c)
    if all(m is not None and m["position"]["task"] == m["num_tasks"] and os.path.exists(ck.results_path)
           for m, ck in zip(metas, ckpts)):
      return [reporting.read_results(ck.results_path) for ck in ckpts]
    starts = {None if m is None else tuple(m["position"].values()) for m in metas}
    if len(starts) > 1 or any(m is not None and m["position"]["epoch"] + m["position"]["batch"] for m in metas):
      raise errors.UserError(f"the workdirs of seeds {seeds} stand at different points or inside a task: "
                             "resume them as separate runs, or use new workdirs")
    return _train(configs, ckpts, metas, stop)


def _check_same_shapes(seeds, tasks, train_sets) -> None:
  """vmap needs every seed's arrays in one shape; only the draw of examples may differ."""
  for name, get in (("training", lambda i, t: train_sets[i][t][1].shape),
                    ("test", lambda i, t: tasks[i].tasks[t].y_test.shape)):
    for t in range(len(tasks[0].tasks)):
      shapes = {get(i, t) for i in range(len(seeds))}
      if len(shapes) > 1:
        raise errors.UserError(f"seeds {seeds} give task {t} {name} sets of different sizes {sorted(shapes)}: "
                               "run them separately (train.parallel_seeds=1)")
  if len({(t.mean, t.std, t.image_shape) for t in tasks}) > 1:
    raise errors.UserError(f"seeds {seeds} normalise their data differently: run them separately")


def _train(configs, ckpts, metas, stop) -> list[dict]:
  config, n = configs[0], len(configs)
  seeds = [c.seed for c in configs]
  tasks = [data_lib.load_tasks(c.data, c.seed) for c in configs]
  for c, t in zip(configs, tasks):
    config_check.check_against_data(c, t)
  methods_ = [train_lib.build_method(c, t) for c, t in zip(configs, tasks)]
  train_sets = [train_lib.training_sets(m, t) for m, t in zip(methods_, tasks)]
  _check_same_shapes(seeds, tasks, train_sets)
  method, k_tasks, cfg = methods_[0], len(tasks[0].tasks), config.train
  size = max(len(y) for _, y in train_sets[0])  # every task padded to this: shapes never change

  states = [train_lib.create_state(m, c) for m, c in zip(methods_, configs)]
  acc = np.full((n, k_tasks, k_tasks), np.nan)
  first_task, seconds_before = 0, 0.0
  if metas[0] is not None:
    restored = [ckpt.restore(s) for ckpt, s in zip(ckpts, states)]
    states = [s for s, _ in restored]
    acc = np.stack([np.asarray(meta["accuracy_matrix"], float) for _, meta in restored])
    first_task, seconds_before = restored[0][1]["position"]["task"], max(m["seconds"] for _, m in restored)
  state = stack(states)
  del states

  started = time.time()
  seconds = lambda: seconds_before + time.time() - started
  compiled = train_lib.use_compiled_loops(cfg.loop)
  step = train_lib.make_train_step(method, augment=cfg.augment, mean=tasks[0].mean, std=tasks[0].std)
  chunk = train_lib.make_train_chunk(step, cfg.batch_size, compiled, method.metric_names, seeds=True)
  # No method function closes over anything seed-specific (base.Method), so every seed runs
  # the first seed's compiled begin_task and end_task, one after another (not vmapped: each
  # seed's task-boundary work stays exactly what it is in a separate run).
  evaluate = train_lib.make_task_evaluate(config, method, tasks[0], compiled)
  identity = lambda state, *unused: state
  begin = jax.jit(method.begin_task or identity)
  end = jax.jit(method.end_task) if method.end_task else None
  writers = [reporting.MetricWriter(ck.tensorboard_dir) for ck in ckpts]
  progress = reporting.Progress(k_tasks)
  try:
    for task_id in range(first_task, k_tasks):
      n_train = len(train_sets[0][task_id][1])
      if not n_train:  # joint training: nothing before the last task
        continue
      clock = _PhaseClock()
      with clock("begin_task"):
        per_seed = [begin(s, task_id) for s in unstack(state, n)]
        images = jnp.asarray(np.stack([train_lib.pad_to(ts[task_id][0], size) for ts in train_sets]))
        labels = jnp.asarray(np.stack([train_lib.pad_to(ts[task_id][1], size) for ts in train_sets]))
        state = stack(per_seed)
        del per_seed
      with clock("train"):
        state = _train_task(chunk, state, images, labels, n_train, task_id, cfg, writers, progress)

      with clock("evaluate"):
        per_seed = unstack(state, n)
        summaries = [train_lib.score_task(evaluate, s, c, t, task_id, acc[i], method.joint)
                     for i, (s, c, t) in enumerate(zip(per_seed, configs, tasks))]
      for i, w in enumerate(writers):
        w.scalars(int(per_seed[i].step), train_lib.task_scalars(acc[i], task_id, summaries[i]))
      # Every seed has the same entries filled: the plain mean over seeds keeps NaN where all are.
      progress.end_task(task_id, acc[:, task_id, :task_id + 1].mean(0),
                        metrics_lib.summarize(acc.mean(0), upto=task_id))
      with clock("end_task"):
        if end is not None:
          per_seed = [end(s, images[i], labels[i], n_train, task_id) for i, s in enumerate(per_seed)]
        state = stack(per_seed)
      position = checkpointing.Position(task=task_id + 1, epoch=0, batch=0)
      with clock("checkpoint"):
        for i, s in enumerate(per_seed):
          train_lib.save_checkpoint(ckpts[i], s, configs[i], tasks[i], position, acc[i], seconds())
      del per_seed
      print(f"task {task_id + 1}/{k_tasks}, {n} seeds: {clock}", flush=True)
      stop.raise_if_requested(position)
  finally:
    progress.close()
    for w in writers:
      w.close()
  return [train_lib.write_results(ckpts[i], configs[i], tasks[i], acc[i], seconds()) for i in range(n)]


class _PhaseClock:
  """Wall seconds per phase of a task (compiles included), printed after each task: the work
  between tasks runs per seed, so it is worth watching against the shared training."""

  def __init__(self):
    self.seconds = {}

  @contextlib.contextmanager
  def __call__(self, phase: str):
    t0 = time.perf_counter()
    yield
    self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

  def __str__(self):
    return ", ".join(f"{phase} {s:.1f} s" for phase, s in self.seconds.items())


def _train_task(chunk, state, images, labels, n_train, task_id, cfg, writers, progress):
  """All epochs of task `task_id` for every seed at once (task-end checkpoints only)."""
  steps_per_epoch = n_train // cfg.batch_size
  num_valid = jnp.full((images.shape[0],), n_train, jnp.int32)
  total = cfg.epochs * steps_per_epoch
  progress.start_task(task_id, total)
  step = int(state.step[0])
  for first, n in train_lib.chunk_plan(0, total, min(cfg.log_every_steps, steps_per_epoch)):
    t0 = time.time()
    state, chunk_metrics = chunk(state, images, labels, num_valid, task_id, first, n)
    chunk_metrics = jax.device_get(chunk_metrics)
    step += n
    epoch, batch = train_lib.epoch_and_batch(first + n, steps_per_epoch)
    train_lib.check_finite(chunk_metrics, task_id, epoch, batch)
    rate = n * cfg.batch_size * images.shape[0] / max(time.time() - t0, 1e-9)
    for i, w in enumerate(writers):
      w.scalars(step, {f"train/{k}": float(v[i]) for k, v in chunk_metrics.items()}
                | {"train/images_per_second_all_seeds": rate, "train/task": task_id})
    progress.advance(n, epoch, {k: float(np.mean(v)) for k, v in chunk_metrics.items()})
  return state
