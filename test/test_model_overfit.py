"""A tiny batch overfits: both losses fall by 10x or more through the two DIAL stages."""
import dataclasses

import torch

from dial_ros.model.config import System1Config
from dial_ros.train.step import build_optimizer, stage_at, train_step


def test_tiny_batch_overfits_both_losses(make_model, make_batch):
    # 128 wide: the 64-wide default memorises 16 x 47 random targets too slowly for a test
    model = make_model(seed=1, system1=dataclasses.replace(System1Config(), dit_hidden=128))
    batch = make_batch(model, batch_size=4, seed=3)
    total = 800
    optimizer = build_optimizer(model, lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=total,
                                                   pct_start=0.05)
    history = []
    torch.manual_seed(0)
    for step in range(total):
        stage = stage_at(step, total)
        if stage != model.stage:
            model.set_stage(stage)
        history.append(train_step(model, batch, optimizer, scheduler=schedule))

    def mean(key, rows):
        return sum(r[key] for r in rows) / len(rows)
    first, last = history[:5], history[-20:]
    assert model.stage == 'end_to_end'
    for key in ('loss_world', 'loss_fm'):
        assert mean(key, last) * 10 <= mean(key, first), (
            f'{key} fell only from {mean(key, first):.4g} to {mean(key, last):.4g}')
