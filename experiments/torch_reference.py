"""A PyTorch reference of the official PAH train step, for `experiments/benchmark.py` only.

Written from the method's specification (the paper's equations and the authors' code's
choices listed in docs/design.md), not from the authors' code. It reproduces what
makes the official step expensive, so that the benchmark compares pah_jax against the algorithm as the authors run it:

- the whole model (backbone, hypernetwork, prototypes) stays in train mode: BatchNorm uses
  batch statistics in every pass, the frozen old model's passes included;
- per batch at task k: one backbone pass for the current task's cross-entropy, then for every
  old task j < k one pass of the old model (no grad) and one of the new model on the same
  images (the backbone is recomputed for every old head: 1 + 2k passes), KL(new || old) at
  T=2 summed over old tasks, one backward, the main AdamW (backbone 1e-4, hypernetwork 1e-3,
  prototypes 1e-3, weight decay 0.01);
- then the prototype phase: for every old task the new model's and the old model's forward
  of that task's prototypes (fed as images at their native s x s size, 1 channel repeated to
  3), KL summed, a second backward whose prototype gradient adds to the one left by the first
  (gradients are not zeroed in between), and a second AdamW on the prototypes alone.

Data are a device-resident uint8 batch normalised inside the step, as in pah_jax, so the
comparison leaves out the official DataLoader's host work (which only favours PyTorch).
PyTorch is a benchmark-only dependency (requirements-benchmark.txt); pah_jax never imports it.
"""

import copy

import torch
from torch import nn
import torch.nn.functional as F

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # PyTorch's convention: equals Flax's momentum=0.9 in pah_jax.models


def _channels(width: float) -> tuple[int, ...]:
  """Stage widths exactly as pah_jax.models.ResNet.stage_channels rounds them."""
  return tuple(max(1, round(c * width)) for c in (64, 128, 256, 512))


def to_input(images_u8):
  """uint8 NHWC -> float NCHW normalised by mean/std 0.5 (the official normalisation), on the
  images' device."""
  return (images_u8.permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection, projection shortcut when shapes change."""

  def __init__(self, in_channels: int, channels: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    self.shortcut = None
    if stride != 1 or in_channels != channels:
      self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, 0, bias=False),
                                    nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM))

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(nn.Module):
  """ResNet-18 feature extractor (no classifier): the shapes of pah_jax.models.ResNet18.

  stem "cifar": 3x3 conv stride 1, no max-pool; "imagenet": 7x7 stride 2 + 3x3 max-pool
  (torchvision's, used by the official code on unresized 32x32 images).
  """

  def __init__(self, width: float = 1.0, stem: str = "imagenet", in_channels: int = 3,
               conv_init: str = "torchvision"):
    super().__init__()
    widths = _channels(width)
    self.in_channels = in_channels
    if stem == "cifar":
      self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                nn.BatchNorm2d(widths[0], eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU())
    elif stem == "imagenet":
      self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
                                nn.BatchNorm2d(widths[0], eps=BN_EPS, momentum=BN_MOMENTUM), nn.ReLU(),
                                nn.MaxPool2d(3, 2, 1))
    else:
      raise ValueError(f"unknown stem {stem!r}")
    blocks, in_channels = [], widths[0]
    for stage, channels in enumerate(widths):
      for b in range(2):
        blocks.append(BasicBlock(in_channels, channels, 2 if stage > 0 and b == 0 else 1))
        in_channels = channels
    self.blocks = nn.Sequential(*blocks)
    self.feature_dim = widths[-1]
    if conv_init not in ("torchvision", "pytorch"):
      raise ValueError(f"unknown conv_init {conv_init!r}")
    for m in self.modules():  # as pah_jax.models.CONV_INITS; "pytorch" keeps nn.Conv2d's own
      if isinstance(m, nn.Conv2d) and conv_init == "torchvision":
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

  def forward(self, x):
    return self.blocks(self.stem(x)).mean(dim=(2, 3))


class Hypernetwork(nn.Module):
  """e_k -> flat head weights: in -> H -> (layers x H) -> out, LeakyReLU(0.01), no biases,
  Kaiming-normal fan-in init with the last layer divided by 10."""

  def __init__(self, in_features: int, out_features: int, hidden: int = 16, layers: int = 1):
    super().__init__()
    sizes = [in_features] + [hidden] * (layers + 1)
    self.hidden = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:]))
    self.out = nn.Linear(hidden, out_features, bias=False)
    for layer in list(self.hidden) + [self.out]:
      nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="leaky_relu", a=0.0)
    with torch.no_grad():
      self.out.weight.div_(10.0)

  def forward(self, e):
    for layer in self.hidden:
      e = F.leaky_relu(layer(e), 0.01)
    return self.out(e)


class PAHModel(nn.Module):
  """Backbone, hypernetwork and the K tasks' prototypes as one (K, C*s*s) embedding table."""

  def __init__(self, num_tasks: int, num_classes: int, *, width: float, stem: str,
               prototype_size: int = 10, hidden: int = 16, layers: int = 1, in_channels: int = 3,
               conv_init: str = "torchvision"):
    super().__init__()
    self.num_classes, self.prototype_size = num_classes, prototype_size
    self.backbone = ResNet18(width, stem, in_channels, conv_init)
    self.hypernet = Hypernetwork(num_classes * prototype_size**2, num_classes * self.backbone.feature_dim,
                                 hidden, layers)
    # nn.Embedding's table, drawn N(0.5, 0.1) like the official random init (speed does not
    # depend on the values; the semantic init only changes them).
    self.prototypes = nn.Parameter(torch.randn(num_tasks, num_classes * prototype_size**2) * 0.1 + 0.5)

  def head(self, task: int):
    """theta_task = Upsilon(e_task): a (C, D) weight matrix, regenerated at every use."""
    return self.hypernet(self.prototypes[task]).view(self.num_classes, self.backbone.feature_dim)

  def logits(self, images, task: int):
    """f(x | task): a full backbone pass, then the task's generated head."""
    return self.backbone(images) @ self.head(task).t()

  def prototype_logits(self, task: int):
    """f(p | task): the task's C grey prototypes as a batch of s x s images, the grey channel
    repeated to the backbone's input channels."""
    s = self.prototype_size
    images = self.prototypes[task].view(self.num_classes, 1, s, s).repeat(1, self.backbone.in_channels, 1, 1)
    return self.logits(images, task)


def kl_new_old(student_logits, teacher_logits, temperature: float = 2.0, eps: float = 1e-10):
  """T^2 KL(new || old) of the softened, clamped distributions, averaged over examples."""
  p_s = F.softmax(student_logits / temperature, dim=-1).clamp_min(eps)
  p_t = F.softmax(teacher_logits / temperature, dim=-1).clamp_min(eps)
  return temperature**2 * (p_s * (p_s.log() - p_t.log())).sum(-1).mean()


class OfficialStep:
  """The official per-batch update at task `task_id`, with the old model frozen at its start.

  Call it with a uint8 NHWC batch already on the device; returns the total loss (a tensor,
  so no host synchronisation per step).
  """

  def __init__(self, model: PAHModel, *, lambda_sm: float = 0.5, lambda_sp: float = 1.0,
               temperature: float = 2.0, lr_backbone: float = 1e-4, lr_hypernet: float = 1e-3,
               lr_prototypes: float = 1e-3, weight_decay: float = 0.01, autocast_dtype=None):
    self.model = model
    self.old = copy.deepcopy(model)  # the teacher: frozen weights, still in train mode
    for p in self.old.parameters():
      p.requires_grad_(False)
    self.model.train()
    self.old.train()
    self.lambda_sm, self.lambda_sp, self.temperature = lambda_sm, lambda_sp, temperature
    self.optimizer = torch.optim.AdamW(
        [{"params": model.backbone.parameters(), "lr": lr_backbone},
         {"params": model.hypernet.parameters(), "lr": lr_hypernet},
         {"params": [model.prototypes], "lr": lr_prototypes}], weight_decay=weight_decay)
    self.prototype_optimizer = torch.optim.AdamW([model.prototypes], lr=lr_prototypes,
                                                 weight_decay=weight_decay)
    self.autocast_dtype = autocast_dtype

  def new_task(self):
    """Freezes the model as it is now as the teacher of the next task (the official code's
    `previous_model = model.deepcopy()`); the optimisers and their state carry on."""
    self.old = copy.deepcopy(self.model)
    for p in self.old.parameters():
      p.requires_grad_(False)
    self.old.train()

  def _autocast(self, device):
    if self.autocast_dtype is None:
      return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=self.autocast_dtype)

  def __call__(self, images_u8, labels, task_id: int):
    model, old, t = self.model, self.old, self.temperature
    x = to_input(images_u8)
    self.optimizer.zero_grad(set_to_none=True)
    self.prototype_optimizer.zero_grad(set_to_none=True)

    with self._autocast(x.device):
      loss_hm = F.cross_entropy(model.logits(x, task_id).float(), labels)
      loss_sm = x.new_zeros(())
      for j in range(task_id):  # every old head gets its own backbone passes
        with torch.no_grad():
          teacher = old.logits(x, j).float()
        loss_sm = loss_sm + kl_new_old(model.logits(x, j).float(), teacher, t)
      loss = loss_hm + self.lambda_sm * loss_sm
    loss.backward()
    self.optimizer.step()

    # Prototype phase at the updated parameters; the prototype gradient of the first backward
    # is still there, so the second optimiser sees grad(L_hm + 0.5 L_sm) + grad(L_sp).
    with self._autocast(x.device):
      loss_sp = x.new_zeros(())
      for j in range(task_id):
        with torch.no_grad():
          teacher = old.prototype_logits(j).float()
        loss_sp = loss_sp + kl_new_old(model.prototype_logits(j).float(), teacher, t)
    if task_id > 0:
      (self.lambda_sp * loss_sp).backward()
    self.prototype_optimizer.step()
    return loss.detach() + self.lambda_sp * loss_sp.detach()


class FinetuneStep:
  """Plain fine-tuning in PyTorch (backbone + one linear head, cross-entropy, AdamW groups):
  the baseline that gives the official step's cost relative to one backbone pass."""

  def __init__(self, width: float, stem: str, num_classes: int, *, lr_backbone: float = 1e-4,
               lr_head: float = 1e-3, weight_decay: float = 0.01, autocast_dtype=None):
    self.backbone = ResNet18(width, stem)
    self.head = nn.Linear(self.backbone.feature_dim, num_classes, bias=False)
    self.optimizer = torch.optim.AdamW(
        [{"params": self.backbone.parameters(), "lr": lr_backbone},
         {"params": self.head.parameters(), "lr": lr_head}], weight_decay=weight_decay)
    self.autocast_dtype = autocast_dtype

  def to(self, device):
    self.backbone.to(device)
    self.head.to(device)
    # The optimiser state is created lazily at the first step, on the parameters' device.
    return self

  def __call__(self, images_u8, labels):
    x = to_input(images_u8)
    self.optimizer.zero_grad(set_to_none=True)
    if self.autocast_dtype is None:
      ctx = torch.autocast(x.device.type, enabled=False)
    else:
      ctx = torch.autocast(x.device.type, dtype=self.autocast_dtype)
    with ctx:
      loss = F.cross_entropy(self.head(self.backbone(x)).float(), labels)
    loss.backward()
    self.optimizer.step()
    return loss.detach()
