"""In-process demo generation: cluttered scenes, worker processes, the parallel token cache,
a DAgger round."""
import colorsys
import json
import os

import numpy as np
import pytest

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


def test_dagger_round_keeps_the_base_and_adds_expert_takeovers(tmp_path):
    """A DAgger round: base episodes copied unchanged, then the expert's part of policy
    rollouts (taken over at 0.5 s, before the policy can finish), tagged as interventions."""
    import pyarrow.parquet as pq
    from dial_ros.data import dagger
    from dial_ros.data.dataset import DialDataset
    base = tmp_path / 'base'
    assert sim_demos.generate(base, 2, seed=20000, max_episodes=5)['demos'] == 2
    out = tmp_path / 'agg'
    summary = dagger.generate(CHECKPOINT, out, 2, seed=41000, takeover_s=(0.5, 0.5),
                              base=base, base_episodes=1,   # the first base demo only
                              intervention_weight=2.0)
    assert summary['base_episodes'] == 1 and summary['takeovers'] == 2, summary
    assert summary['expert_successes'] >= 1, summary
    ds, first = DialDataset(out), DialDataset(base)
    assert len(ds.episodes) == 1 + summary['expert_successes']
    e, b = ds.episodes[0], first.episodes[0]
    assert e.length == b.length
    np.testing.assert_array_equal(ds.state[:e.length], first.state[:b.length])
    np.testing.assert_array_equal(ds.action[:e.length], first.action[:b.length])
    np.testing.assert_array_equal(ds.image(0, 5), first.image(0, 5))
    episodes = pq.read_table(next((out / 'meta' / 'episodes').rglob('*.parquet'))).to_pydict()
    assert episodes['source'] == ['teleop'] + ['intervention'] * summary['expert_successes']
    assert episodes['weight'] == [1.0] + [2.0] * summary['expert_successes']
    taken = ds.episodes[1]
    assert ds.has_action[taken.start:taken.start + taken.length].all()
    rollouts = json.loads((out / 'meta' / 'info.json').read_text())['dial']['rollouts']
    assert [r['seed'] for r in rollouts] == [41000, 41001]
    assert all(not r['policy_success'] for r in rollouts)
    with pytest.raises(ValueError, match='exists'):
        dagger.generate(CHECKPOINT, out, 1)
