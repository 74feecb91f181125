"""Convert a torchvision ResNet-18 checkpoint once into an .npz that needs no PyTorch to load.

  python -m experiments.convert_torchvision resnet18-f37072fd.pth resnet18.npz
  python -m pah_jax.main --config=configs/cifar_official.py --workdir=runs/pretrained \\
      --config.model.pretrained=resnet18.npz

The input is a torchvision state dict (`.pth`/`.pt`, read with PyTorch; or `.npz`/
`.safetensors`). Every backbone tensor is checked against the Flax ResNet-18 of
`pah_jax.models` (width 1.0 and the ImageNet stem unless --width/--stem say otherwise; only
shapes are traced, nothing is computed) and written under its torchvision name as float32,
in PyTorch's layout: the .npz is a state dict, which `pah_jax.pretrained` maps at load time.
The classifier (`fc.*`) and `num_batches_tracked` are dropped: PAH generates its heads.
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from pah_jax import models
from pah_jax import pretrained
from pah_jax.errors import UserError


def abstract_backbone(width: float, stem: str):
  """(params, batch_stats) of the backbone as shapes only (jax.eval_shape: no computation)."""
  net = models.ResNet18(width=width, stem=stem)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda key, x: net.init(key, x, train=False), jax.random.PRNGKey(0), x)
  return variables["params"], variables["batch_stats"]


def convert_file(src: str, dst: str, width: float = 1.0, stem: str = "imagenet") -> dict[str, np.ndarray]:
  """Reads `src`, validates it against the backbone, writes the backbone tensors to `dst`."""
  if not dst.endswith(".npz"):
    raise UserError(f"the output {dst} must end with .npz")
  state_dict = pretrained.read_state_dict(src)
  params, batch_stats = abstract_backbone(width, stem)
  hint = f"the converter checked against model.width={width}, model.stem={stem} (see --width/--stem)"
  pretrained.convert(state_dict, params, batch_stats, source=src, hint=hint)  # raises on any mismatch
  names = pretrained.expected_shapes(params, batch_stats)
  sd = pretrained.strip_wrappers(state_dict)
  out = {name: np.asarray(sd[name], dtype=np.float32) for name in sorted(names)}
  os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
  tmp = dst[:-len(".npz")] + ".tmp.npz"  # np.savez appends .npz to names without it
  np.savez(tmp, **out)
  os.replace(tmp, dst)  # a half-written file never carries the final name
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("src", help="torchvision state dict: .pth/.pt (needs PyTorch), .npz or .safetensors")
  parser.add_argument("dst", help="output .npz (torchvision key names, float32)")
  parser.add_argument("--width", type=float, default=1.0, help="ResNet-18 width factor to check against")
  parser.add_argument("--stem", choices=("imagenet", "cifar"), default="imagenet", help="stem to check against")
  args = parser.parse_args(argv)
  try:
    out = convert_file(args.src, args.dst, args.width, args.stem)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  count = sum(v.size for v in out.values())
  print(f"wrote {len(out)} tensors ({count:,} numbers) to {args.dst}; "
        f"use it with --config.model.pretrained={args.dst}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
