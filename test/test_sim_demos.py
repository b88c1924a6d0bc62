"""In-process demo generation: cluttered scenes, worker processes, the parallel token cache."""
import colorsys
import json
import os

import numpy as np

from dial_ros.data import sim_demos, token_cache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINT = os.path.join(ROOT, 'checkpoints', 'dial_tiny_gr1')


def test_clutter_task_is_seeded_bounded_and_never_red():
    counts = []
    for seed in range(200):
        task = sim_demos.clutter_task(seed, 3, {'cube_rgba': None})
        assert task == sim_demos.clutter_task(seed, 3, {'cube_rgba': None})
        assert task['cube_rgba'] is None                 # the base overrides are kept
        counts.append(task['n_distractors'])
        assert len(task['distractor_rgba']) >= task['n_distractors']
        for r, g, b, a in task['distractor_rgba']:
            hue = colorsys.rgb_to_hsv(r, g, b)[0] * 360.0
            assert 35.0 <= hue <= 325.0, (seed, hue)     # the red cube stays the only red
    assert set(counts) == {0, 1, 2, 3}
    assert sim_demos.clutter_task(7, 0) == {}


def test_workers_write_seed_ordered_cluttered_demos_and_the_cache_fills_in_parallel(tmp_path):
    out = tmp_path / 'ds'
    summary = sim_demos.generate(out, 2, seed=20000, clutter=3, workers=2, max_episodes=6)
    assert summary['demos'] == 2, summary
    info = json.loads((out / 'meta' / 'info.json').read_text())['dial']
    seeds = info['seeds']
    assert seeds == sorted(seeds) and seeds[0] >= 20000
    assert info['clutter'] == 3
    # the cache CLI (2 processes) writes what training would otherwise encode on one core
    assert token_cache.main(['--dataset', str(out), '--checkpoint', CHECKPOINT,
                             '--workers', '2']) == 0
    from dial_ros.data.dataset import DialDataset
    from dial_ros.model.checkpoint import load_checkpoint
    model = load_checkpoint(CHECKPOINT)
    ds = DialDataset(out, image_size=model.config.vlm.image_size)
    folder = out / 'cache' / f'vit_{token_cache.vision_digest(model)}'
    files = sorted(p.name for p in folder.glob('episode_*.npy'))
    assert files == [f'episode_{e:06d}.npy' for e in sorted(ds.episodes)]
    episode = ds.episodes[min(ds.episodes)]
    cached = np.load(folder / files[0])
    fresh = model.system2.encode_images(np.stack([ds.image(episode.index, 0)])).float()
    np.testing.assert_allclose(cached[0], fresh[0].detach().numpy(), atol=1e-5)
