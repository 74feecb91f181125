"""PAH+: PAH with the extensions beyond the paper that measured better, applied on top of another
config as configs/official.py is. No replay: nothing of earlier tasks is stored but the frozen
old model and the prototypes, as in PAH.

Use the `*_plus.py` configs; this module holds what they share:
- head warm-up, `pah.head_warmup_steps = 20`: from the second task on, the backbone is held for
  a task's first 20 steps while the hypernetwork and prototypes fit the new task's generated
  head. A head generated from new prototypes can start confidently wrong, and without the
  warm-up its early gradients reshape the features old tasks rely on: on a random class order
  this was where most of PAH's forgetting came from (docs/results.md, "PAH+: what was tried").
- feature distillation, `pah.lambda_fd = 1`: the backbone's features of the current images stay
  close to the frozen old model's (docs/design.md, "Losses").

Every other key keeps the value of the config it is applied to; only keys that are off (0) in
the paper and official presets are set here.
"""


def apply(c):
  c.pah.head_warmup_steps = 20
  c.pah.lambda_fd = 1.0
  return c
