"""Shared fixtures: tiny DIAL models (real transformers Qwen2.5-VL class) and batches."""
import os
import random

import numpy as np
import pytest
import torch

# Before anything creates an rclpy context: localhost discovery and a domain of our own.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(100, 200)))
os.environ.setdefault('OMP_NUM_THREADS', '1')
torch.set_num_threads(1)


@pytest.fixture(scope='session')
def embodiment():
    from dial_ros.embodiment import load_embodiment
    return load_embodiment('gr1_tabletop')


@pytest.fixture
def make_model(embodiment):
    """Build a fresh tiny model: make_model(recipe='dial', **config_overrides)."""
    from dial_ros.model.config import tiny_config
    from dial_ros.model.dial import DialModel

    def build(seed=0, **overrides):
        torch.manual_seed(seed)
        overrides.setdefault('embodiments', ['gr1_tabletop'])
        return DialModel(tiny_config(**overrides), [embodiment])
    return build


def random_images(n, size=224, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture
def make_batch(embodiment):
    """A batch in model units; some samples can be made action-free (human video)."""
    def build(model, batch_size=4, seed=0, no_action=(), instructions=None):
        gen = torch.Generator().manual_seed(seed)
        cfg = model.config.system1
        images = random_images(2 * batch_size, model.config.vlm.image_size, seed)
        tokens = model.system2.encode_images(images)
        state = torch.zeros(batch_size, cfg.max_state_dim)
        state_mask = torch.zeros(batch_size, cfg.max_state_dim, dtype=torch.bool)
        state[:, :embodiment.state_dim] = torch.randn(batch_size, embodiment.state_dim,
                                                      generator=gen)
        state_mask[:, :embodiment.state_dim] = True
        actions = torch.zeros(batch_size, cfg.horizon, cfg.max_action_dim)
        mask = torch.zeros_like(actions, dtype=torch.bool)
        actions[..., :embodiment.action_dim] = torch.randn(
            batch_size, cfg.horizon, embodiment.action_dim, generator=gen)
        mask[..., :embodiment.action_dim] = True
        for i in no_action:
            actions[i] = 0
            mask[i] = False
        instructions = instructions or [f'pick up the cube number {i}' for i in
                                        range(batch_size)]
        return {
            'obs_tokens': tokens[:batch_size], 'future_tokens': tokens[batch_size:],
            'instructions': instructions, 'state': state, 'state_mask': state_mask,
            'actions': actions, 'action_mask': mask,
            'embodiment': torch.full((batch_size,), embodiment.embodiment_id, dtype=torch.long),
        }
    return build
