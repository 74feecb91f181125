"""The PAH paper's numbers (De La Fuente et al. 2025, arXiv 2505.07450).

All ResNet-18, task-incremental, AA (average accuracy) and FM (forgetting) in percent.
A value is (mean, std) where the paper gives a spread over seeds, (mean, None) where it
gives one number. `experiments/paper_tables.py` prints these next to measured numbers.
"""

# Table 1, keyed by data set (config `data.name`). The paper reports one TinyImageNet result
# without a split in the paper; the tables show it next to both 10x20 and 20x10.
TABLE1_DATASETS = {
    "cifar100": "Split-CIFAR100",
    "tiny_imagenet": "TinyImageNet",
}

PAH = {
    "cifar100": {"average_accuracy": (74.46, 0.08), "forgetting": (1.71, 0.02)},
    "tiny_imagenet": {"average_accuracy": (63.65, 1.94), "forgetting": (4.43, 0.07)},
}

# The paper's baselines, Table 1 (one number each).
BASELINES = {
    "HN-2 (partial hypernetwork)": {
        "cifar100": {"average_accuracy": (62.80, None), "forgetting": (4.10, None)},
        "tiny_imagenet": {"average_accuracy": (39.90, None), "forgetting": (10.20, None)},
    },
    "DER (buffer 200)": {
        "cifar100": {"average_accuracy": (63.09, None), "forgetting": (25.98, None)},
        "tiny_imagenet": {"average_accuracy": (42.27, None), "forgetting": (40.43, None)},
    },
    "SI": {
        "cifar100": {"average_accuracy": (63.58, None), "forgetting": (27.98, None)},
        "tiny_imagenet": {"average_accuracy": (44.96, None), "forgetting": (26.29, None)},
    },
    "A-GEM": {
        "cifar100": {"average_accuracy": (59.81, None), "forgetting": (30.08, None)},
        "tiny_imagenet": {"average_accuracy": (60.45, None), "forgetting": (24.94, None)},
    },
}

# The paper's PAH setting, which every ablation changes in one key.
PAPER_SETTING = {
    "pah.prototype_size": 10,
    "pah.prototype_init": "semantic",
    "pah.lambda_sm": 0.5,
    "pah.lambda_sp": 1.0,
    "pah.lambda_hp": 0.0,
}

# Ablations on Split-CIFAR100: (group, config key, values). Each run changes one key of the
# base config.
ABLATIONS = (
    ("prototype_size", "pah.prototype_size", (5, 10, 16, 20)),
    ("prototype_init", "pah.prototype_init", ("semantic", "random")),
    ("lambda_sm", "pah.lambda_sm", (0.1, 0.25, 0.5, 0.75, 1.0)),
    ("lambda_sp", "pah.lambda_sp", (0.0, 0.5, 1.0)),
    # Beyond the paper: the prototype classification term L_hp (pah.lambda_hp; 0 = the paper).
    ("lambda_hp", "pah.lambda_hp", (0.0, 0.5, 1.0)),
)

_MAIN = PAH["cifar100"]


def _one(aa, fm):
  return {"average_accuracy": (aa, None), "forgetting": (fm, None)}


# (config key, value) -> the paper's Split-CIFAR100 numbers. The paper setting's own values
# are Table 1's PAH result (the same run).
ABLATION_VALUES = {
    ("pah.prototype_size", 5): _one(73.72, 1.89),
    ("pah.prototype_size", 10): _MAIN,
    ("pah.prototype_size", 16): _one(73.52, 1.76),
    ("pah.prototype_size", 20): _one(71.95, 2.66),
    ("pah.prototype_init", "semantic"): _MAIN,
    ("pah.prototype_init", "random"): _one(72.54, 2.32),
    ("pah.lambda_sm", 0.5): _MAIN,
    ("pah.lambda_sp", 1.0): _MAIN,
}

# What the paper says where it gives no number for a setting.
ABLATION_NOTES = {
    ("pah.lambda_sm", 0.5): "best lambda_sm",
    ("pah.lambda_sp", 0.0): "clearly worse than lambda_sp=1.0",
    ("pah.lambda_sp", 1.0): "best lambda_sp",
    ("pah.lambda_hp", 0.0): "no L_hp (official code: weight 0)",
}
