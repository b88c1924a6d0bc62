"""The trainer on a tiny synthetic dataset: stages, metrics, checkpoints, exact resume."""
import csv

import pytest
import torch
from safetensors.torch import load_file

from test_dataset_bags import robot_tags, write_episode


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    from dial_ros.data.convert import convert
    root = tmp_path_factory.mktemp('trainer')
    bags = [str(write_episode(root / f'ep{i}', robot_tags(), frames=12, size=64))
            for i in range(2)]
    summary = convert(bags, root / 'dataset', embodiment='gr1_sim', image_size=64)
    assert summary.converted, summary.lines()
    return root / 'dataset'


def train(dataset, out, *flags):
    from dial_ros.train.__main__ import main
    args = ['--dataset', str(dataset), '--out', str(out), '--batch-size', '2',
            '--save-every', '3', '--seed', '3', *flags]
    assert main(args) == 0


def weights(run):
    return load_file(str(run / 'checkpoints' / 'latest' / 'model.safetensors'))


def test_two_stages_metrics_and_checkpoint(dataset, tmp_path):
    from dial_ros.data.dataset import DialDataset
    from dial_ros.model.checkpoint import load_checkpoint
    train(dataset, tmp_path / 'run', '--steps', '6', '--recipe', 'dial')
    with open(tmp_path / 'run' / 'metrics.csv') as f:
        rows = list(csv.DictReader(f))
    assert [int(r['step']) for r in rows] == list(range(1, 7))
    assert [r['stage'] for r in rows] == ['warmup'] * 3 + ['end_to_end'] * 3
    assert all(float(r['loss']) > 0 and float(r['lr']) > 0 for r in rows)
    assert (tmp_path / 'run' / 'checkpoints' / 'step_000003').is_dir()
    png = (tmp_path / 'run' / 'losses.png').read_bytes()
    assert png.startswith(b'\x89PNG') and len(png) > 5000
    model = load_checkpoint(tmp_path / 'run' / 'checkpoints' / 'latest')
    assert model.stage == 'end_to_end'
    spec = DialDataset(dataset, image_size=64).spec
    saved = model.embodiments['gr1_sim']
    assert saved.to_dict() == spec.to_dict()


@pytest.mark.parametrize('recipe,stop,ema', [('dial', '3', '0'), ('apt', '3', '0'),
                                             ('apt', '4', '0'), ('dial', '4', '0.9')])
def test_resume_reproduces_an_uninterrupted_run(dataset, tmp_path, recipe, stop, ema):
    """Resume before and after the stage switch (apt's switch adds optimizer groups), with
    and without a weight average."""
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    train(dataset, straight, '--steps', '6', '--recipe', recipe, '--ema-decay', ema)
    train(dataset, split, '--steps', '6', '--recipe', recipe, '--stop-at', stop,
          '--ema-decay', ema)
    assert len(list(csv.DictReader(open(split / 'metrics.csv')))) == int(stop)
    train(dataset, split, '--resume')
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    rows_a = list(csv.DictReader(open(straight / 'metrics.csv')))
    rows_b = list(csv.DictReader(open(split / 'metrics.csv')))
    assert [r['loss'] for r in rows_a] == [r['loss'] for r in rows_b]


def test_checkpoint_holds_the_weight_average(dataset, tmp_path):
    """With ema_decay the deployed weights are the average: trained tensors differ from the
    raw ones kept for resuming, frozen ones (the ViT) do not."""
    run = tmp_path / 'run'
    train(dataset, run, '--steps', '4', '--recipe', 'groot', '--ema-decay', '0.99')
    deployed = weights(run)
    state = load_file(str(run / 'checkpoints' / 'latest' / 'trainer_state.safetensors'))
    raw = {k[4:]: v for k, v in state.items() if k.startswith('raw.')}
    trained = [k for k in raw if 'system1.' in k and k in deployed]
    frozen = [k for k in raw if '.visual.' in k and k in deployed]
    assert trained and frozen
    assert any(not torch.equal(deployed[k], raw[k]) for k in trained)
    assert all(torch.equal(deployed[k], raw[k]) for k in frozen)


def test_bad_config_value_names_the_field(dataset, tmp_path):
    from dial_ros.train.__main__ import main
    from dial_ros.train.trainer import TrainConfig
    with pytest.raises(ValueError, match='warmup_ratio'):
        TrainConfig.from_dict({'warmup_ratio': 2.0})
    with pytest.raises(ValueError, match='batch_size'):
        main(['--dataset', str(dataset), '--out', str(tmp_path), '--batch-size', '0'])
    with pytest.raises(ValueError, match='model.system1.dit_hidden: 5 is below its minimum'):
        main(['--dataset', str(dataset), '--out', str(tmp_path), '--model',
              '{system1: {dit_hidden: 5}}'])
    config = tmp_path / 'train.yaml'
    config.write_text('lr: -1.0\n')
    with pytest.raises(ValueError, match='lr'):
        main(['--dataset', str(dataset), '--out', str(tmp_path), '--config', str(config)])


def test_token_cache_gives_the_loss_of_the_frames(dataset):
    """Cached ViT tokens are what the model computes from the decoded frames."""
    from dial_ros.data.dataset import DialDataset, collate
    from dial_ros.data.token_cache import load_token_cache
    from dial_ros.model.build import build_model
    torch.manual_seed(0)
    model = build_model('tiny', embodiments=['gr1_sim'])
    frames = DialDataset(dataset)
    cached = DialDataset(dataset)
    cached.use_tokens(load_token_cache(cached, model))
    picks = (0, 5, len(frames) - 1)
    batch_frames = collate([frames[i] for i in picks])
    batch_tokens = collate([cached[i] for i in picks])
    assert 'obs_tokens' in batch_tokens and 'images' not in batch_tokens
    losses = []
    for batch in (batch_frames, batch_tokens):
        torch.manual_seed(1)
        losses.append(model.compute_loss(batch)[1])
    assert torch.allclose(losses[0]['loss'], losses[1]['loss'], atol=1e-5), losses


def test_groot_baseline_recipe_trains_without_foresight(dataset, tmp_path):
    """GR00T-style: one stage, no world loss, System-1 on the VLM's image features."""
    import numpy as np

    from dial_ros.model.policy import DialPolicy
    train(dataset, tmp_path / 'run', '--steps', '4', '--recipe', 'groot', '--episodes', '1')
    rows = list(csv.DictReader(open(tmp_path / 'run' / 'metrics.csv')))
    assert {r['stage'] for r in rows} == {'vlm_features'}
    assert all(float(r['loss_world']) == 0.0 and float(r['loss']) == float(r['loss_fm'])
               for r in rows)
    policy = DialPolicy.from_checkpoint(tmp_path / 'run' / 'checkpoints' / 'latest')
    tokens = policy.encode_frame(np.full((224, 224, 3), 90, np.uint8))
    features = policy.foresee(tokens, 'pick up the cube')
    assert features.shape == tokens.shape and not np.allclose(features, tokens)
    import yaml
    meta = yaml.safe_load(open(tmp_path / 'run' / 'checkpoints' / 'latest' / 'dial_config.yaml'))
    assert meta['extra']['demos'] == 1


def test_model_overrides_reach_the_checkpoint(dataset, tmp_path):
    from dial_ros.model.checkpoint import load_checkpoint
    train(dataset, tmp_path / 'run', '--steps', '2', '--model',
          '{system1: {dit_hidden: 32, dit_layers: 2}}')
    model = load_checkpoint(tmp_path / 'run' / 'checkpoints' / 'latest')
    assert (model.config.system1.dit_hidden, model.config.system1.dit_layers) == (32, 2)


def test_episodes_beyond_the_dataset_are_refused(dataset, tmp_path):
    with pytest.raises(ValueError, match='episodes: 5 requested, the dataset has 2'):
        train(dataset, tmp_path / 'run', '--steps', '2', '--episodes', '5')
