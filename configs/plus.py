"""PAH+: PAH with the extensions beyond the paper that measured better, applied on top of another
config as configs/official.py is. No replay: nothing of earlier tasks is stored but the frozen
old model and the prototypes, as in PAH.

Use the `*_plus.py` configs; this module holds what they share:
- feature distillation, `pah.lambda_fd = 1`: the backbone's features of the current images stay
  close to the frozen old model's (docs/design.md, "Losses"). On the suite's n300_seq setting it
  cut PAH's forgetting by a third at a small cost in plasticity (docs/results.md, "Where PAH's
  plasticity and stability go").

Every other key keeps the value of the config it is applied to; only keys that are off (0) in
the paper and official presets are set here.
"""


def apply(c):
  c.pah.lambda_fd = 1.0
  return c
