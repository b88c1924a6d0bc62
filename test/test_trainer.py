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
    model = load_checkpoint(tmp_path / 'run' / 'checkpoints' / 'latest')
    assert model.stage == 'end_to_end'
    spec = DialDataset(dataset, image_size=64).spec
    saved = model.embodiments['gr1_sim']
    assert saved.to_dict() == spec.to_dict()


@pytest.mark.parametrize('recipe,stop', [('dial', '3'), ('apt', '3'), ('apt', '4')])
def test_resume_reproduces_an_uninterrupted_run(dataset, tmp_path, recipe, stop):
    """Resume before and after the stage switch (apt's switch adds optimizer groups)."""
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    train(dataset, straight, '--steps', '6', '--recipe', recipe)
    train(dataset, split, '--steps', '6', '--recipe', recipe, '--stop-at', stop)
    assert len(list(csv.DictReader(open(split / 'metrics.csv')))) == int(stop)
    train(dataset, split, '--resume')
    a, b = weights(straight), weights(split)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    rows_a = list(csv.DictReader(open(straight / 'metrics.csv')))
    rows_b = list(csv.DictReader(open(split / 'metrics.csv')))
    assert [r['loss'] for r in rows_a] == [r['loss'] for r in rows_b]


def test_bad_config_value_names_the_field(dataset, tmp_path):
    from dial_ros.train.__main__ import main
    from dial_ros.train.trainer import TrainConfig
    with pytest.raises(ValueError, match='warmup_ratio'):
        TrainConfig.from_dict({'warmup_ratio': 2.0})
    with pytest.raises(ValueError, match='batch_size'):
        main(['--dataset', str(dataset), '--out', str(tmp_path), '--batch-size', '0'])
    config = tmp_path / 'train.yaml'
    config.write_text('lr: -1.0\n')
    with pytest.raises(ValueError, match='lr'):
        main(['--dataset', str(dataset), '--out', str(tmp_path), '--config', str(config)])
