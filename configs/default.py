"""Defaults shared by every config: PAH as the paper's text describes it.

Every other config imports `get_config()` from here and overrides what differs. The keys every
method shares are set here; each method's own section comes from its module's declaration
(pah_jax/methods/<name>.py), defaults and comments included. `pah_jax.config_check`
validates them all.
"""

import ml_collections

from pah_jax.methods import registry


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # a built-in method (pah_jax/methods/registry.py, BUILTIN: pah, hnet, finetune, joint, lwf,
  # ewc, si, agem, derpp) or the import path of a method module of your own
  # (docs/adding_a_method.md)
  c.method = "pah"

  c.data = d = ml_collections.ConfigDict()
  d.name = "cifar100"  # cifar100 | tiny_imagenet | fashion_mnist | npz
  # TFDS data_dir (manual files under <path>/downloads/manual), the Fashion-MNIST IDX folder, or
  # the .npz file; "" = TFDS's default data_dir (Fashion-MNIST: Debian's dataset-fashion-mnist).
  d.path = ""
  d.num_tasks = 10  # K: must divide the data set's classes (C = classes / K per task)
  d.class_order = "sequential"  # sequential (paper, official code) | random (seeded by `seed`)
  d.class_order_seed = -1  # with class_order=random and >= 0: one order from this seed for every run seed
  d.max_train_per_task = 0  # 0 = all; otherwise a stratified subsample
  d.max_test_per_task = 0  # 0 = all test images of the task's classes
  # > 0: zero-pad every image to pad_to x pad_to (before normalisation; 28 -> 32 is how the
  # authors' code was fed Fashion-MNIST). 0 = the images as they are.
  d.pad_to = 0
  d.normalization = "dataset"  # dataset (per-data-set mean/std) | half (official: mean 0.5, std 0.5)
  d.download = False  # let TFDS download when the files are absent (needs internet)

  c.model = m = ml_collections.ConfigDict()
  m.stem = "cifar"  # cifar (3x3 conv, no max-pool) | imagenet (7x7/2 + max-pool, torchvision)
  m.width = 1.0  # ResNet-18 width factor: 1.0 = 64-128-256-512 channels, feature D = 512 * width
  # Convolution init from scratch: torchvision (Kaiming normal, fan_out; torchvision's ResNet) |
  # pytorch (nn.Conv2d's default, U(+-1/sqrt(fan_in)): ~2.4x smaller, so AdamW turns it faster).
  m.conv_init = "torchvision"
  # Convolutions over maps with fewer positions than the kernel has taps (imagenet stem: stages
  # 3-4 of 32x32 images, most of a 10x10 prototype's pass): matmul = one matrix product that
  # skips the taps on padding zeros (the same function, faster on a CPU: docs/performance.md) |
  # conv = every layer a convolution | auto = matmul on CPU, conv on GPU/TPU (until measured
  # there); a run prints the choice once.
  m.small_map_convs = "auto"
  # BatchNorm outside the training forward (teacher, prototype passes, evaluation):
  # batch = batch statistics (the official code never calls model.eval());
  # running = running statistics, updated only by the current model's training batches.
  # Running statistics lose old tasks on Split-FashionMNIST 5x2 although prototype and teacher
  # passes never update them (docs/reproducing.md, "BatchNorm statistics").
  m.batch_norm = "batch"
  # Per-pass overrides of batch_norm ("" = as batch_norm): the teacher's pass on the current
  # images, the prototype passes f(p | j) of student and teacher, test-set evaluation.
  m.teacher_batch_norm = ""
  m.prototype_batch_norm = ""
  m.eval_batch_norm = ""
  # torchvision ResNet-18 state dict for the backbone (.pth needs torch; .npz from
  # experiments/convert_torchvision.py; .safetensors); "" = from scratch. Needs width 1.0.
  m.pretrained = ""
  m.dtype = "float32"  # float32 | bfloat16 (compute dtype; parameters stay float32)

  # The methods' sections (hypernet, pah, hnet, joint, lwf, ewc, si, agem, derpp): each method
  # declares its own, with defaults and comments, in pah_jax/methods/<name>.py.
  for section, values in registry.default_sections().items():
    c[section] = values

  c.optim = o = ml_collections.ConfigDict()
  o.lr_backbone = 1e-4  # official AdamW groups
  o.lr_hypernet = 1e-3  # the hypernetwork (pah, hnet)
  o.lr_prototypes = 1e-3  # also hnet's task embeddings
  o.lr_heads = 1e-3  # the stored per-task heads of the baselines
  o.weight_decay = 0.01  # official: PyTorch's AdamW default (its configured decay is ignored)
  o.b1 = 0.9  # Adam's moment decay rates and epsilon (PyTorch's defaults, as the official code)
  o.b2 = 0.999
  o.eps = 1e-8

  c.train = t = ml_collections.ConfigDict()
  t.epochs = 15  # per task (official code)
  t.batch_size = 64  # global: split over every device of every process
  t.eval_accuracy = "examples"  # examples | batch_mean (official: mean of per-batch accuracies)
  t.eval_batch_size = 500  # running-statistics evaluation only; batch mode evaluates at batch_size
  t.augment = False  # random crop (pad 4) + horizontal flip, on device
  # auto: compiled epoch loops on GPU/TPU, per-step jit calls on CPU (XLA:CPU runs convolutions
  # in rolled loops several times slower: docs/performance.md) | compiled | python
  t.loop = "auto"
  # Steps per chunk (capped at one epoch): metrics are logged, and a stop request honoured
  # (after a checkpoint), at chunk ends.
  t.log_every_steps = 50
  # >1: seeds seed, seed+1, ... trained as one vmapped program (pah_jax/train.py, train_seeds),
  # each writing <workdir>/seed_<n> as its separate run would.
  t.parallel_seeds = 1
  t.checkpoint_every_steps = 0  # 0 = only at task ends; otherwise also every N steps inside a task
  t.keep_checkpoints = 2  # the newest N checkpoints are kept
  # Compiled XLA programs the command line keeps on disk across runs ("" = off): a rerun, a
  # resume or another seed of the same config skips its compiles (docs/performance.md).
  t.compilation_cache = "~/.cache/pah_jax/xla"
  return c
