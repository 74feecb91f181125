"""Defaults shared by every config: PAH as the paper's text describes it.

Every other config imports `get_config()` from here and overrides what differs, so the
full set of keys is visible in one place. `pah_jax.config_check` validates them.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # pah | hnet | finetune | joint | lwf | ewc | si | agem | derpp (pah_jax/methods/)
  c.method = "pah"

  c.data = d = ml_collections.ConfigDict()
  d.name = "cifar100"  # cifar100 | tiny_imagenet | fashion_mnist | npz
  d.path = ""  # TFDS data_dir (manual files under <path>/downloads/manual), IDX dir, or .npz file
  d.num_tasks = 10
  d.class_order = "sequential"  # sequential (paper, official code) | random (seeded by `seed`)
  d.max_train_per_task = 0  # 0 = all; otherwise a stratified subsample
  d.max_test_per_task = 0
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
  # skips the taps on padding zeros (same function, 1.6-3.3x faster fine-tune steps on a CPU) |
  # conv = as convolutions (pah_jax before this switch).
  m.small_map_convs = "matmul"
  # BatchNorm outside the training forward (teacher, prototype passes, evaluation):
  # batch = batch statistics (the official code never calls model.eval());
  # running = running statistics, updated only by the current model's training batches.
  # Measured on Split-FashionMNIST 5x2 (README): running statistics lose old tasks (AA 87.96,
  # FM 12.83) although prototype and teacher passes never touch them; batch: AA 96.63, FM 2.06.
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

  c.hypernet = h = ml_collections.ConfigDict()
  h.hidden = 16  # official code's only shipped config: 16 units ...
  h.layers = 1  # ... and 1 extra hidden layer (in -> 16 -> 16 -> C*D)
  h.activation = "leaky_relu"  # leaky_relu (slope 0.01, official) | relu | gelu
  h.use_bias = False  # official: no biases in the hypernetwork
  h.head_bias = False  # official: the generated head is a weight matrix only
  h.last_layer_scale = 0.1  # official: Kaiming fan-in init, last layer divided by 10

  c.pah = p = ml_collections.ConfigDict()
  p.prototype_size = 10  # s: prototypes are s x s images (paper ablation 5/10/16/20)
  p.prototype_init = "semantic"  # semantic | random
  p.semantic_init = "resize"  # resize (paper: whole image resized) | crop (official: centre crop, channel mean)
  p.prototype_channels = 0  # 0 = the data's channels; official: 1 (grey, repeated for the backbone)
  p.random_init_mean = 0.5  # official nn.Embedding init N(0.5, 0.1)
  p.random_init_std = 0.1
  p.exclude_init_images = False  # official: the chosen image is removed from training
  p.lambda_sm = 0.5  # eq. 6 "stability" weight of L_sm (paper best 0.5)
  p.lambda_sp = 1.0  # eq. 6 weight of L_sp (paper best 1.0)
  # Beyond the paper: L_hp, cross-entropy of the current task's prototypes under their own
  # generated head (the official code's weight_hard_loss_prototypes, 0 in its configs);
  # updates only the prototypes, beside L_sp. 0 = off (paper and official presets).
  p.lambda_hp = 0.0
  p.temperature = 2.0  # T of eq. 4-5, loss scaled by T^2
  p.kl_direction = "old_new"  # old_new = KL(old || new) (paper) | new_old (official code)
  p.old_task_reduction = "mean"  # mean over j < k (paper) | sum (official code)
  # masked = one optax-masked update of the prototypes from L_sp (paper text);
  # official = second AdamW on the prototypes fed grad(L_hm + lambda_sm L_sm) + grad(L_sp).
  p.prototype_update = "masked"

  # Baselines (`method`): hyperparameters and their sources are in pah_jax/methods/<name>.py.
  c.hnet = n = ml_collections.ConfigDict()
  n.embedding_dim = 0  # 0 = the size of PAH's flattened prototypes (C*s*s*ch): same hypernetwork
  n.output_reg = 0.0  # von Oswald et al. 2020's beta: keep old heads' generated weights (0 = PAH minus prototypes)

  c.joint = j = ml_collections.ConfigDict()
  # joint trains on batches that mix every task, so BatchNorm's batch statistics at test time
  # (one task's images per batch) are not what it trained under: test with the running
  # statistics of its mixed batches. "" = as model.eval_batch_norm / batch_norm. Measured on
  # Split-FashionMNIST (seed 0, lr 1e-3): batch 97.73 AA, running 98.97 (README).
  j.eval_batch_norm = "running"

  c.lwf = lw = ml_collections.ConfigDict()
  lw.alpha = 1.0  # Li & Hoiem 2017: lambda_o = 1
  lw.temperature = 2.0  # Li & Hoiem 2017: T = 2

  c.ewc = e = ml_collections.ConfigDict()
  e.strength = 100.0  # lambda of the quadratic penalty (lambda / 2) sum F (theta - theta*)^2
  e.gamma = 1.0  # online EWC's decay of the accumulated Fisher (Schwarz et al. 2018)
  e.fisher_samples = 512  # training examples per task for the empirical Fisher diagonal
  e.fisher_batch = 32  # per-example gradients computed this many at a time

  c.si = si = ml_collections.ConfigDict()
  si.strength = 0.1  # c of Zenke et al. 2017 (penalty c sum Omega (theta - theta*)^2)
  si.damping = 0.1  # xi of Zenke et al. 2017

  c.agem = a = ml_collections.ConfigDict()
  a.memory_size = 200  # episodic memory, split equally over the tasks (examples, uint8)
  a.memory_batch = 64  # memory examples per reference gradient

  c.derpp = r = ml_collections.ConfigDict()
  r.buffer_size = 200  # reservoir buffer (examples, with their logits), as the paper's DER row
  r.alpha = 0.1  # logit-matching weight (Buzzega et al. 2020, seq-CIFAR-10, buffer 200)
  r.beta = 0.5  # buffer cross-entropy weight (same source)
  r.buffer_batch = 64  # buffer examples per term and step

  c.optim = o = ml_collections.ConfigDict()
  o.lr_backbone = 1e-4  # official AdamW groups
  o.lr_hypernet = 1e-3
  o.lr_prototypes = 1e-3  # also hnet's task embeddings
  o.lr_heads = 1e-3  # the stored per-task heads of the baselines
  o.weight_decay = 0.01  # official: PyTorch's AdamW default (its configured decay is ignored)
  o.b1 = 0.9
  o.b2 = 0.999
  o.eps = 1e-8

  c.train = t = ml_collections.ConfigDict()
  t.epochs = 15
  t.batch_size = 64
  t.eval_accuracy = "examples"  # examples | batch_mean (official: mean of per-batch accuracies)
  t.eval_batch_size = 500  # running-statistics evaluation only; batch mode evaluates at batch_size
  t.augment = False  # random crop (pad 4) + horizontal flip, on device
  # auto: compiled epoch loops on GPU/TPU, per-step jit calls on CPU (XLA:CPU runs convolutions
  # in rolled loops ~15x slower) | compiled | python
  t.loop = "auto"
  t.log_every_steps = 50
  # >1: seeds seed, seed+1, ... trained as one vmapped program (pah_jax/parallel_seeds.py),
  # each writing <workdir>/seed_<n> as its separate run would.
  t.parallel_seeds = 1
  t.checkpoint_every_steps = 0  # 0 = only at task ends; otherwise also every N steps inside a task
  t.keep_checkpoints = 2
  # Compiled XLA programs the command line keeps on disk across runs ("" = off): a rerun, a
  # resume or another seed of the same config skips its compiles (a toy first task: 12.1 -> 3.6 s).
  t.compilation_cache = "~/.cache/pah_jax/xla"
  return c
