"""Bags -> LeRobot v3.0 dataset -> DialDataset -> DialModel.compute_loss, on tiny episodes."""
import json
import shutil

import numpy as np
import pytest
import torch
from test_dataset_bags import PATCH, counter_value, joint_value, robot_tags, write_episode

from dial_ros.data.convert import convert, main
from dial_ros.data.dataset import DialDataset, collate, mixed_sampler
from dial_ros.data.video import decode_all
from dial_ros.embodiment import load_embodiment

FPS = 20.0
HUMAN_TAGS = {'source': 'human', 'instruction': 'wave both hands', 'outcome': 'success',
              'operator': 'bob'}


@pytest.fixture(scope='module')
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp('bags')
    write_episode(root / 'ep_a', robot_tags(), frames=30)
    write_episode(root / 'ep_b', dict(robot_tags(), instruction='open the drawer'), frames=24,
                  idle_frames=6)
    write_episode(root / 'ep_human', HUMAN_TAGS, frames=20, joints=False, commands=False,
                  wrists=True)
    write_episode(root / 'ep_names', robot_tags(), frames=8, rename_joints=True)
    write_episode(root / 'ep_noimg', robot_tags(), frames=8, images=False)
    write_episode(root / 'ep_fail', robot_tags(outcome='fail'), frames=8)
    write_episode(root / 'ep_nocmd', robot_tags(), frames=8, commands=False)
    write_episode(root / 'ep_trunc', robot_tags(), frames=30)
    mcap = next((root / 'ep_trunc').glob('*.mcap'))
    mcap.write_bytes(mcap.read_bytes()[:mcap.stat().st_size // 2])
    return root


@pytest.fixture(scope='module')
def converted(bags, tmp_path_factory):
    out = tmp_path_factory.mktemp('ds') / 'dataset'
    return out, convert([str(bags)], out, 'gr1_sim', fps=FPS, trim_idle=True)


@pytest.fixture(scope='module')
def dataset(converted):
    return DialDataset(converted[0], horizon=16, future_offset=16)


def episode(ds, bag_name, summary):
    index = {name: i for name, i, _ in summary.converted}[bag_name]
    return ds.episodes[index]


def sample(ds, ep, t):
    return ds[int(np.searchsorted(ds._samples, ep.start + t))]


def test_broken_episodes_are_named_and_the_rest_converts(converted):
    out, summary = converted
    assert [name for name, _, _ in summary.converted] == ['ep_a', 'ep_b', 'ep_human',
                                                          'ep_trunc']
    reasons = dict(summary.skipped)
    assert set(reasons) == {'ep_names', 'ep_noimg', 'ep_fail', 'ep_nocmd'}
    assert 'missing topic /dial/joint_commands' in reasons['ep_nocmd']
    assert 'joint names do not match' in reasons['ep_names']
    assert 'no images on /camera/head/image_raw' in reasons['ep_noimg']
    assert 'outcome' in reasons['ep_fail']
    assert any('damaged' in w for w in summary.warnings['ep_trunc'])
    assert any('skipped ep_names' in line for line in summary.lines())
    info = json.loads((out / 'meta' / 'info.json').read_text())
    assert {s['bag'] for s in info['dial']['skipped']} == set(reasons)


def test_meta_files_parse(converted):
    import pyarrow.parquet as pq
    out, summary = converted
    info = json.loads((out / 'meta' / 'info.json').read_text())
    assert info['codebase_version'] == 'v3.0' and info['fps'] == FPS
    assert info['total_episodes'] == 4 and info['total_frames'] == summary.frames
    feats = info['features']
    assert feats['observation.images.head']['dtype'] == 'video'
    assert feats['observation.state']['shape'] == [32] == feats['action']['shape']
    assert feats['observation.state']['names'] == load_embodiment('gr1_sim').joint_names
    tasks = pq.read_table(out / 'meta' / 'tasks.parquet').to_pydict()
    assert sorted(tasks['task']) == ['open the drawer', 'pick up the cube', 'wave both hands']
    eps = pq.read_table(out / 'meta/episodes/chunk-000/file-000.parquet').to_pydict()
    assert eps['length'] == [n for _, _, n in summary.converted]
    assert eps['source'] == ['teleop', 'teleop', 'human', 'teleop']
    assert eps['operator'][2] == 'bob' and eps['outcome'][0] == 'success'
    assert eps['task_name'][0] == 'pick_cube'
    assert eps['dataset_to_index'][-1] == summary.frames
    assert eps['videos/observation.images.head/to_timestamp'][-1] == summary.frames / FPS
    data = pq.read_table(out / info['data_path'].format(chunk_index=0, file_index=0))
    assert data.num_rows == summary.frames
    assert data.column('index').to_pylist() == list(range(summary.frames))
    ts = np.asarray(data.column('timestamp')) * FPS
    assert np.allclose(ts, data.column('frame_index').to_numpy())
    stats = json.loads((out / 'meta' / 'stats.json').read_text())
    human_frames = eps['length'][2]
    assert stats['action']['count'] == [summary.frames - human_frames]
    assert stats['observation.eef']['count'] == [human_frames]
    assert np.shape(stats['observation.images.head']['mean']) == (3, 1, 1)
    assert all(set(v) == {'mean', 'std', 'min', 'max', 'count'} for v in stats.values())


def test_video_decodes_to_frames_with_their_counters(converted):
    out, summary = converted
    video = decode_all(out / 'videos/observation.images.head/chunk-000/file-000.mp4')
    assert len(video) == summary.frames and video.shape[1:] == (224, 224, 3)
    patch = video[:, PATCH[0], PATCH[1]].reshape(len(video), -1).mean(1)
    length = dict((name, n) for name, _, n in summary.converted)
    assert np.allclose(patch[:30], [counter_value(k) for k in range(30)], atol=6)
    trimmed = 24 - length['ep_b']           # --trim-idle keeps the last idle frame
    assert trimmed == 5
    assert np.allclose(patch[30:30 + length['ep_b']],
                       [counter_value(k + trimmed) for k in range(length['ep_b'])], atol=6)


def test_sample_keys_shapes_and_joint_name_mapping(dataset, converted):
    ds, spec = dataset, load_embodiment('gr1_sim')
    ep = episode(ds, 'ep_a', converted[1])
    s = sample(ds, ep, 5)
    assert s['image'].shape == s['future_image'].shape == (224, 224, 3)
    assert s['image'].dtype == np.uint8
    assert s['state'].shape == s['state_mask'].shape == (128,)
    assert s['actions'].shape == s['action_mask'].shape == (16, 128)
    assert s['instruction'] == 'pick up the cube' and s['has_action']
    assert s['embodiment'] == spec.embodiment_id and s['episode_index'] == ep.index
    # shuffled names + an extra joint, mapped by name: the state follows joint order
    q = [joint_value(j, 5 / FPS) for j in range(spec.num_joints)]
    expected, mask = spec.encode_state(q)
    assert s['state_mask'].sum() == mask.sum() == spec.state_dim
    assert np.allclose(s['state'][:spec.state_dim], expected, atol=5e-3)
    # actions: the command issued right after each frame, normalised with dataset stats
    targets = np.array([[joint_value(j, (5 + k) / FPS + 0.058) for j in range(32)]
                        for k in range(16)])
    got = ds.spec.denormalize_action(s['actions'][:, :32].astype(np.float64))
    assert np.allclose(got, targets, atol=1e-4)


def test_future_frame_and_chunk_clip_at_episode_end(dataset, converted):
    ep = episode(dataset, 'ep_a', converted[1])
    early, late = sample(dataset, ep, 5), sample(dataset, ep, 25)
    value = (lambda img: img[PATCH].mean())
    assert abs(value(early['image']) - counter_value(5)) < 6
    assert abs(value(early['future_image']) - counter_value(21)) < 6
    assert abs(value(late['future_image']) - counter_value(29)) < 6   # clipped at T-1
    # past the end the last action repeats and stays in the loss (the official DIAL code)
    assert late['action_mask'][:, :32].all() and not late['action_mask'][:, 32:].any()
    assert np.array_equal(late['actions'][5:], np.repeat(late['actions'][4:5], 11, axis=0))
    masked = DialDataset(dataset.root, past_end='mask')
    late = sample(masked, episode(masked, 'ep_a', converted[1]), 25)
    assert late['action_mask'][:5, :32].all() and not late['action_mask'][5:].any()
    assert not late['action_mask'][:, 32:].any() and not late['actions'][5:].any()


def test_human_samples_have_no_actions(dataset, converted):
    ep = episode(dataset, 'ep_human', converted[1])
    s = sample(dataset, ep, 3)
    assert not s['has_action'] and not s['action_mask'].any()
    assert not s['state_mask'].any()      # gr1_sim has no wrist groups to put poses in
    assert s['instruction'] == 'wave both hands'
    assert dataset.is_human().sum() == ep.length


def test_human_wrists_fill_eef_dims(bags, tmp_path):
    convert([str(bags / 'ep_human')], tmp_path / 'h', 'gr1_tabletop', fps=FPS)
    ds = DialDataset(tmp_path / 'h', embodiment='gr1_tabletop')
    s = ds[2]
    assert not s['has_action'] and s['state_mask'].sum() == 18
    mask = s['action_mask']
    assert mask[:, :18].all() and not mask[:, 18:].any()
    assert np.allclose(s['actions'][:, 3:9], [1, 0, 0, 0, 1, 0])   # rot6d stays raw
    right_x = ds.spec.denormalize_action(s['actions'][0, :47].astype(np.float64))[0]
    assert right_x == pytest.approx(0.3 + 0.01 * 3, abs=1e-5)      # the next wrist pose


def test_collate_through_tiny_model(dataset, converted):
    from dial_ros.model.build import build_model
    torch.manual_seed(0)
    model = build_model('tiny', embodiments=['gr1_sim'])
    human = episode(dataset, 'ep_human', converted[1])
    batch = collate([dataset[0], dataset[40], sample(dataset, human, 1)])
    assert batch['images'].dtype == np.uint8 and batch['images'].shape == (3, 224, 224, 3)
    assert batch['has_action'].tolist() == [True, True, False]
    loss, parts = model.compute_loss(batch)
    assert torch.isfinite(loss) and parts['loss_fm'] > 0
    loss.backward()


def test_mixed_sampler_draws_humans_at_the_weight(dataset):
    human = dataset.is_human()
    sampler = mixed_sampler(dataset, human_weight=0.5, num_samples=4000,
                            generator=torch.Generator().manual_seed(0))
    drawn = human[np.fromiter(iter(sampler), int)]
    assert 0.45 < drawn.mean() < 0.55 and human.mean() < 0.3
    assert np.allclose(dataset.sample_weights(None), 1.0)
    with pytest.raises(ValueError, match='human_weight'):
        dataset.sample_weights(1.5)


def test_dataloader_with_a_worker(dataset):
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, num_workers=1,
                                         collate_fn=collate, shuffle=True)
    batch = next(iter(loader))
    assert batch['actions'].shape == (8, 16, 128) and len(batch['instructions']) == 8


def test_camera_faster_than_fps_is_thinned(tmp_path):
    write_episode(tmp_path / 'bags' / 'ep_fast', robot_tags(), frames=20, fps=40.0)
    summary = convert([str(tmp_path / 'bags')], tmp_path / 'ds', fps=FPS)
    assert summary.converted[0][2] == 10
    video = decode_all(tmp_path / 'ds/videos/observation.images.head/chunk-000/file-000.mp4')
    patch = video[:, PATCH[0], PATCH[1]].reshape(10, -1).mean(1)
    assert np.allclose(patch, [counter_value(2 * k) for k in range(10)], atol=6)


def test_cli(bags, tmp_path):
    good = tmp_path / 'in' / 'ep_a'
    shutil.copytree(bags / 'ep_a', good)
    assert main(['--bags', str(good), '--out', str(tmp_path / 'cli')]) == 0
    assert main(['--bags', str(good), '--out', str(tmp_path / 'cli')]) == 2   # not empty
    assert main(['--bags', str(bags / 'ep_no*'), '--out', str(tmp_path / 'none')]) == 1
    assert main(['--bags', str(tmp_path / 'missing*'), '--out', str(tmp_path / 'x')]) == 2


def test_small_file_limits_roll_over_to_new_files(bags, tmp_path):
    paths = [str(bags / name) for name in ('ep_a', 'ep_b', 'ep_human')]
    convert(paths, tmp_path / 'ds', fps=FPS, data_files_size_in_mb=1e-6,
            video_files_size_in_mb=1e-6)
    # the encoder's lookahead delays the first bytes, so the first roll may come late
    assert len(list((tmp_path / 'ds/videos').rglob('*.mp4'))) >= 2
    assert len(list((tmp_path / 'ds/data').rglob('*.parquet'))) == 3
    ds = DialDataset(tmp_path / 'ds')
    assert len(ds) == 30 + 24 + 20
    for index, t in ((0, 7), (1, 20), (2, 11)):
        s = sample(ds, ds.episodes[index], t)
        assert abs(s['image'][PATCH].mean() - counter_value(t)) < 6
        assert s['episode_index'] == index and s['frame_index'] == t


def test_previous_command_alignment_and_header_clock(bags, tmp_path):
    convert([str(bags / 'ep_a')], tmp_path / 'ds', fps=FPS, action_align='previous',
            clock='header')
    ds = DialDataset(tmp_path / 'ds')
    first, s = ds[0], ds[6]
    assert len(ds) == 30 and not first['has_action'] and not first['action_mask'][0].any()
    assert first['action_mask'][1:, :32].all()   # frame 1 on: the command after frame 0
    held = ds.spec.denormalize_action(s['actions'][0, :32].astype(np.float64))
    assert np.allclose(held, [joint_value(j, 5 / FPS + 0.058) for j in range(32)], atol=1e-4)
