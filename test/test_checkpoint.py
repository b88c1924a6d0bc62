"""Checkpoints: safetensors + YAML, bit-identical round trip, clear errors."""
import numpy as np
import pytest
import torch
import yaml

from dial_ros.model.checkpoint import load_checkpoint, save_checkpoint
from dial_ros.model.policy import DialPolicy


def outputs(policy, joints):
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    tokens = policy.encode_frame(image)
    intent = policy.foresee(tokens, 'pick up the cube')
    return tokens, intent, policy.act(tokens, intent, joints, seed=7)


@pytest.mark.parametrize('recipe,stage', [('dial', 'warmup'), ('dial', 'end_to_end'),
                                          ('apt', 'apt_prior')])
def test_round_trip_is_bit_identical(make_model, tmp_path, embodiment, recipe, stage):
    model = make_model(recipe=recipe)
    model.set_stage(stage)
    joints = np.linspace(-0.1, 0.1, embodiment.num_joints)
    before = outputs(DialPolicy(model), joints)
    save_checkpoint(model, tmp_path / 'ckpt')
    files = sorted(p.name for p in (tmp_path / 'ckpt').iterdir())
    assert files == ['dial_config.yaml', 'model.safetensors', 'vlm']
    assert not list((tmp_path / 'ckpt').rglob('*.bin')) and not list(
        (tmp_path / 'ckpt').rglob('*.pt')), 'no pickle files'
    loaded = load_checkpoint(tmp_path / 'ckpt')
    assert loaded.stage == stage
    after = outputs(DialPolicy(loaded), joints)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_apt_stage2_round_trip_with_features(make_model, tmp_path, embodiment):
    model = make_model(recipe='apt')
    model.set_stage('apt_language')
    with torch.no_grad():  # open the gates so the fusion path is part of the comparison
        for gate in model.system1.gated_fusion.values():
            gate.gate.fill_(0.3)
    save_checkpoint(model, tmp_path / 'ckpt')
    policies = [DialPolicy(model), DialPolicy(load_checkpoint(tmp_path / 'ckpt'))]
    image = np.full((224, 224, 3), 90, np.uint8)
    results = []
    for policy in policies:
        tokens = policy.encode_frame(image)
        intent, feats = policy.foresee(tokens, 'lift', return_features=True)
        results.append(policy.act(tokens, intent, np.zeros(embodiment.num_joints), seed=1,
                                  features=feats))
    np.testing.assert_array_equal(results[0], results[1])


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='checkpoint not found'):
        load_checkpoint(tmp_path / 'nope')


def test_incomplete_checkpoint_names_the_missing_file(make_model, tmp_path):
    save_checkpoint(make_model(), tmp_path / 'ckpt')
    (tmp_path / 'ckpt' / 'model.safetensors').unlink()
    with pytest.raises(FileNotFoundError, match='model.safetensors is missing'):
        load_checkpoint(tmp_path / 'ckpt')


def test_mismatched_checkpoint_fails_clearly(make_model, tmp_path):
    save_checkpoint(make_model(), tmp_path / 'ckpt')
    path = tmp_path / 'ckpt' / 'dial_config.yaml'
    meta = yaml.safe_load(path.read_text())
    meta['model']['system1']['dit_layers'] = 6
    path.write_text(yaml.safe_dump(meta))
    with pytest.raises(ValueError, match='does not match'):
        load_checkpoint(tmp_path / 'ckpt')


def test_bad_config_value_names_the_field(make_model, tmp_path):
    save_checkpoint(make_model(), tmp_path / 'ckpt')
    path = tmp_path / 'ckpt' / 'dial_config.yaml'
    meta = yaml.safe_load(path.read_text())
    meta['model']['system1']['inference_steps'] = 0
    path.write_text(yaml.safe_dump(meta))
    with pytest.raises(ValueError, match='inference_steps'):
        load_checkpoint(tmp_path / 'ckpt')
