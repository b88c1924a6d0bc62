"""Shapes through the whole model at tiny scale (real transformers Qwen2.5-VL class)."""
import numpy as np
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from dial_ros.model.policy import DialPolicy


def test_vlm_is_the_real_transformers_class(make_model):
    model = make_model()
    assert isinstance(model.system2.adapter.hf, Qwen2_5_VLForConditionalGeneration)


def test_vit_gives_64_tokens_of_llm_width(make_model):
    model = make_model()
    images = np.zeros((2, 224, 224, 3), np.uint8)
    tokens = model.system2.encode_images(images)
    assert tokens.shape == (2, 64, model.system2.hidden_size)


def test_intent_matches_vit_token_shape(make_model, make_batch):
    model = make_model()
    batch = make_batch(model, batch_size=3)
    intent, features = model.foresee(batch['obs_tokens'], batch['instructions'])
    assert intent.shape == batch['obs_tokens'].shape
    assert features == []


def test_action_chunk_shapes(make_model, make_batch, embodiment):
    model = make_model()
    batch = make_batch(model, batch_size=2)
    cfg = model.config.system1
    actions = model.sample_actions(batch['future_tokens'], batch['obs_tokens'], batch['state'],
                                   batch['state_mask'], batch['embodiment'])
    assert actions.shape == (2, cfg.horizon, cfg.max_action_dim)
    policy = DialPolicy(model)
    image = np.zeros((224, 224, 3), np.uint8)
    tokens = policy.encode_frame(image)
    intent = policy.foresee(tokens, 'pick up the cube')
    chunk = policy.act(tokens, intent, np.zeros(embodiment.num_joints))
    assert tokens.dtype == np.float32 and intent.dtype == np.float32
    assert chunk.shape == (cfg.horizon, embodiment.num_joints)


def test_batched_instructions_of_different_length_match_single(make_model, make_batch):
    """Left padding must not change a sample's intent."""
    model = make_model().eval()
    batch = make_batch(model, batch_size=2, instructions=['lift', 'put the red cube in the bin'])
    with torch.no_grad():
        both, _ = model.foresee(batch['obs_tokens'], batch['instructions'])
        one, _ = model.foresee(batch['obs_tokens'][:1], batch['instructions'][:1])
    torch.testing.assert_close(both[:1], one, atol=1e-5, rtol=1e-4)


def test_checkpoint_folder_path_loads_offline(tmp_path, embodiment):
    """The paper-scale path (a local HF folder, from_pretrained) with a tiny folder."""
    from dial_ros.model.config import VLMConfig, tiny_config
    from dial_ros.model.dial import DialModel
    from dial_ros.model.tiny_vlm import save_tiny_vlm
    folder = save_tiny_vlm(tmp_path / 'qwen-tiny', seed=5)
    config = tiny_config(vlm=VLMConfig(scale='paper', path=str(folder)),
                         embodiments=['gr1_tabletop'])
    model = DialModel(config, [embodiment])
    assert isinstance(model.system2.adapter.hf, Qwen2_5_VLForConditionalGeneration)
    tokens = model.system2.encode_images(np.zeros((1, 224, 224, 3), np.uint8))
    assert tokens.shape == (1, 64, 64)


def test_missing_vlm_folder_is_a_clear_error(tmp_path, embodiment):
    import pytest
    from dial_ros.model.config import VLMConfig, tiny_config
    from dial_ros.model.dial import DialModel
    config = tiny_config(vlm=VLMConfig(scale='paper', path=str(tmp_path / 'none')),
                         embodiments=['gr1_tabletop'])
    with pytest.raises(FileNotFoundError, match='has no config.json'):
        DialModel(config, [embodiment])
