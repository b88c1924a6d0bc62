"""Build an (untrained) DIAL model and write it as a checkpoint folder.

    python -m dial_ros.model.build --out ckpt/tiny                      # tiny, offline
    python -m dial_ros.model.build --scale paper --vlm-path /models/Qwen2.5-VL-3B-Instruct \
        --out ckpt/paper                                                # needs the folder
"""
import argparse
import logging
import sys

from dial_ros.embodiment import load_embodiment
from dial_ros.model.checkpoint import save_checkpoint
from dial_ros.model.config import paper_config, tiny_config
from dial_ros.model.dial import DialModel


def build_model(scale='tiny', vlm_path='', embodiments=('gr1_tabletop',), recipe='dial'):
    """A fresh DialModel at the given scale for the named embodiments."""
    specs = [load_embodiment(name) for name in embodiments]
    make = tiny_config if scale == 'tiny' else (lambda **kw: paper_config(vlm_path, **kw))
    config = make(embodiments=list(embodiments), recipe=recipe)
    return DialModel(config, specs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='checkpoint folder to write')
    parser.add_argument('--scale', choices=('tiny', 'paper'), default='tiny')
    parser.add_argument('--vlm-path', default='', help='local Qwen2.5-VL checkpoint folder')
    parser.add_argument('--embodiment', action='append', default=None,
                        help='embodiment config name (repeatable; default gr1_tabletop)')
    parser.add_argument('--recipe', choices=('dial', 'apt'), default='dial')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.scale == 'paper' and not args.vlm_path:
        parser.error('--scale paper needs --vlm-path (a local Qwen2.5-VL checkpoint folder)')
    model = build_model(args.scale, args.vlm_path, args.embodiment or ['gr1_tabletop'],
                        args.recipe)
    path = save_checkpoint(model, args.out)
    logging.info('wrote %s (%d parameters)', path, sum(p.numel() for p in model.parameters()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
