"""Fine-tuning: the lower bound of every table.

One shared backbone and one stored linear head per task (`heads`), trained on each task in
turn with plain cross-entropy; nothing protects old tasks (old heads are frozen, the backbone
is not), so its forgetting is what the other methods are measured against.
Config: optim.lr_heads (the heads' learning rate; the backbone's is optim.lr_backbone).
"""

from pah_jax.methods.registry import Declaration

METHOD = Declaration(
    name="finetune",
    description="fine-tuning, stored heads (lower bound)",
    reads=("optim.lr_heads",),
)


def build(setup):
  from pah_jax.methods import heads

  return heads.method(setup, "finetune")
