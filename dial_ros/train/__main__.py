"""Train DIAL on a LeRobot-layout dataset.

    python -m dial_ros.train --dataset data/pick --out runs/pick --steps 2000 --batch-size 8
    python -m dial_ros.train --dataset data/pick --out runs/pick --resume     # continue
    torchrun --nproc-per-node 4 -m dial_ros.train --dataset data/pick --out runs/pick

Settings come from TrainConfig (dial_ros.train.trainer): its defaults, then --config YAML,
then the flags given. With --resume the run's saved train_config.yaml replaces the defaults.
"""
import argparse
import dataclasses
import logging
import pathlib
import sys

import yaml

from dial_ros.schema import described_fields
from dial_ros.train.trainer import TrainConfig, Trainer


def parse_bool(text):
    """true/false, yes/no, 1/0 (argparse's bool would take any non-empty text as True)."""
    value = text.strip().lower()
    if value not in ('true', 'false', 'yes', 'no', '1', '0'):
        raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')
    return value in ('true', 'yes', '1')


def parse_mapping(text):
    """A YAML / JSON mapping given on the command line, e.g. '{system1: {dit_hidden: 128}}'."""
    value = yaml.safe_load(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a mapping, got {text!r}')
    return value


def parser():
    """One flag per TrainConfig field (defaults None: only given flags override)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--dataset', required=True, help='LeRobot-layout dataset folder')
    p.add_argument('--out', required=True, help='run folder (checkpoints, metrics)')
    p.add_argument('--config', help='YAML file of TrainConfig fields')
    p.add_argument('--resume', action='store_true', help='continue from OUT/checkpoints/latest')
    for f, meta in described_fields(TrainConfig):
        flag = '--' + f.name.replace('_', '-')
        kind = {int: int, float: float, str: str, bool: parse_bool, dict: parse_mapping}.get(
            f.type if isinstance(f.type, type) else None)
        kwargs = {'type': float, 'nargs': 2} if f.name == 'betas' else {'type': kind or str}
        if meta['choices']:
            kwargs['choices'] = meta['choices']
        p.add_argument(flag, default=None, help=meta['description'], **kwargs)
    return p


def load_config(args):
    """TrainConfig from (saved run config |) YAML | flags; ValueError names a bad field."""
    data = {}
    saved = pathlib.Path(args.out) / 'train_config.yaml'
    if args.resume and saved.is_file():
        data.update(yaml.safe_load(saved.read_text()) or {})
        data['stop_at'] = 0
    if args.config:
        loaded = yaml.safe_load(pathlib.Path(args.config).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f'{args.config}: expected a mapping of TrainConfig fields')
        data.update(loaded)
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            data[f.name] = list(value) if f.name == 'betas' else value
    return TrainConfig.from_dict(data)


def main(argv=None):
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    config = load_config(args)
    trainer = Trainer(config, args.dataset, args.out, resume=args.resume)
    metrics = trainer.run()
    logging.getLogger(__name__).info('done: %s', metrics)
    return 0


if __name__ == '__main__':
    sys.exit(main())
