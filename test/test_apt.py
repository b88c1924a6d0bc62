"""APT recipe: language-free stage 1, function-preserving stage-2 insertion, gated fusion."""
import numpy as np
import torch

from dial_ros.model.policy import DialPolicy


def test_stage1_hides_language_completely(make_model, make_batch):
    model = make_model(recipe='apt').eval()
    assert model.stage == 'apt_prior'
    assert len(model.system1.blocks) == model.config.system1.dit_layers // 2
    tokens = make_batch(model, batch_size=1)['obs_tokens']
    with torch.no_grad():
        a, _ = model.foresee(tokens, ['pick up the red cube'])
        b, _ = model.foresee(tokens, ['wave with the left hand slowly, then stop'])
    # identical up to float rounding (the padded sequence lengths differ)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    model.set_stage('apt_language')
    with torch.no_grad():
        c, _ = model.foresee(tokens, ['pick up the red cube'])
        d, _ = model.foresee(tokens, ['wave with the left hand slowly, then stop'])
    assert (c - d).abs().max() > 1e-6, 'stage 2 must see the instruction'


def test_stage1_trains_no_llm(make_model, make_batch):
    model = make_model(recipe='apt')
    loss, _ = model.compute_loss(make_batch(model))
    loss.backward()
    llm = model.system2.adapter.language_model
    assert all(p.grad is None for p in llm.parameters())
    assert model.system2.queries.grad is not None


def test_stage2_insertion_preserves_the_prior_exactly(make_model, embodiment):
    model = make_model(recipe='apt')
    policy = DialPolicy(model)
    image = np.full((224, 224, 3), 120, np.uint8)
    tokens = policy.encode_frame(image)
    intent = policy.foresee(tokens, 'lift')
    joints = np.zeros(embodiment.num_joints)
    before = policy.act(tokens, intent, joints, seed=3)
    model.set_stage('apt_language')
    assert len(model.system1.blocks) == model.config.system1.dit_layers
    assert len(model.system1.gated_fusion) == model.config.system1.dit_layers // 2
    _, features = policy.foresee(tokens, 'lift', return_features=True)
    after = policy.act(tokens, intent, joints, seed=3, features=features)
    np.testing.assert_allclose(before, after, rtol=0, atol=1e-6)
    # opening a gate makes the instruction matter to System-1
    with torch.no_grad():
        for gate in model.system1.gated_fusion.values():
            gate.gate.fill_(0.5)
    _, other = policy.foresee(tokens, 'put the cube in the bin', return_features=True)
    changed = policy.act(tokens, intent, joints, seed=3, features=other)
    assert np.abs(changed - policy.act(tokens, intent, joints, seed=3,
                                       features=features)).max() > 1e-6


def test_gates_are_per_channel_and_zero_initialised(make_model):
    model = make_model(recipe='apt')
    model.set_stage('apt_language')
    for gate in model.system1.gated_fusion.values():
        assert gate.gate.shape == (model.config.system1.dit_hidden,)
        assert float(gate.gate.detach().abs().sum()) == 0
        assert gate.gate.requires_grad
