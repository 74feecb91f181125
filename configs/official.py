"""The authors' code in every point where it departs from the paper's text, applied on top of another config.

Use the `*_official.py` configs; this module holds the overrides they share: crop-and-grey
semantic init at the code's fixed rows/columns 11:11+s, with that image removed from
training, KL(new || old), sum over old tasks, batch statistics everywhere, the second AdamW
on the prototypes, AdamW groups (backbone 1e-4, hypernetwork and prototypes 1e-3, weight
decay 0.01), 15 epochs, batch 64, no augmentation, natural class order, ImageNet stem,
mean/std 0.5 normalisation, test accuracy as the mean of per-batch accuracies over shuffled
batches of 64.
"""


def apply(c):
  c.data.class_order = "sequential"
  c.data.normalization = "half"
  c.model.stem = "imagenet"
  c.model.batch_norm = "batch"
  c.hypernet.hidden = 16
  c.hypernet.layers = 1
  c.hypernet.activation = "leaky_relu"
  c.hypernet.use_bias = False
  c.hypernet.head_bias = False
  c.hypernet.last_layer_scale = 0.1
  c.pah.prototype_init = "semantic"
  c.pah.semantic_init = "crop"
  c.pah.crop_position = "official"
  c.pah.prototype_channels = 1
  c.pah.exclude_init_images = True
  c.pah.kl_direction = "new_old"
  c.pah.old_task_reduction = "sum"
  c.pah.prototype_update = "official"
  c.optim.lr_backbone = 1e-4
  c.optim.lr_hypernet = 1e-3
  c.optim.lr_prototypes = 1e-3
  c.optim.weight_decay = 0.01
  c.train.epochs = 15
  c.train.batch_size = 64
  c.train.augment = False
  c.train.eval_accuracy = "batch_mean"
  return c
