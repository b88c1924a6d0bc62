"""System-1's fast inference path (model.flow_sampler) against the reference loop."""
import copy

import pytest
import torch

from dial_ros.embodiment import load_embodiment
from dial_ros.model import flow_sampler
from dial_ros.model.config import tiny_config
from dial_ros.model.dial import DialModel
from dial_ros.model.policy import DialPolicy
from dial_ros.paths import bundled_checkpoint


def close(fast, ref):
    """Equal to float32 rounding. The outputs are O(1-10) normalised units, and the reference
    loop itself moves by up to 1.9e-6 when the same sample runs in a batch of 3 (measured on
    the bundled checkpoint): a few ulps of 8."""
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=4e-6)


def inputs(model, seed, batch=1, embodiment_id=0):
    gen = torch.Generator().manual_seed(seed)
    cfg, n, d = model.config.system1, model.config.num_foresight, model.token_dim
    return dict(intent=torch.randn(batch, n, d, generator=gen),
                obs_tokens=torch.randn(batch, n, d, generator=gen),
                state=torch.randn(batch, cfg.max_state_dim, generator=gen),
                state_mask=torch.rand(batch, cfg.max_state_dim, generator=gen) > 0.3,
                embodiment=torch.full((batch,), embodiment_id, dtype=torch.long),
                noise=torch.randn(batch, cfg.horizon, cfg.max_action_dim, generator=gen))


def both(model, steps=None, features=(), **kw):
    with torch.inference_mode():
        fast = model.sample_actions(**kw, steps=steps, features=features)
        ref = model.sample_actions(**kw, steps=steps, features=features, fast=False)
    return fast, ref


@pytest.fixture(scope='module')
def bundled():
    return DialPolicy.from_checkpoint(bundled_checkpoint(), part='system1')


@pytest.mark.parametrize('steps', [1, 2, 4, 7])
def test_bundled_checkpoint_fast_path_matches_reference(bundled, steps):
    model, e = bundled.model, bundled.embodiment.embodiment_id
    for seed in range(3):
        fast, ref = both(model, steps, **inputs(model, seed, embodiment_id=e))
        close(fast, ref)


def test_each_embodiment_and_a_batch_match_reference():
    embodiments = [load_embodiment('gr1_tabletop'), load_embodiment('gr1_sim')]
    torch.manual_seed(1)
    model = DialModel(tiny_config(embodiments=['gr1_tabletop', 'gr1_sim']), embodiments).eval()
    for e in embodiments:
        for seed, batch in ((0, 1), (1, 3)):
            close(*both(model, **inputs(model, seed, batch, e.embodiment_id)))
    mixed = inputs(model, 2, batch=2)
    mixed['embodiment'] = torch.tensor([0, 1])
    assert not flow_sampler.supports(model.system1, mixed['embodiment'])
    close(*both(model, **mixed))  # runs the reference loop both times


def test_apt_stage2_gated_fusion_matches_reference(make_model, make_batch):
    model = make_model(recipe='apt')
    model.set_stage('apt_language')
    with torch.no_grad():  # open the gates: zero gates would hide the fusion
        for gate in model.system1.gated_fusion.values():
            gate.gate.fill_(0.5)
    model.eval()
    batch = make_batch(model, batch_size=1)
    with torch.inference_mode():
        _, features = model.foresee(batch['obs_tokens'], batch['instructions'])
    assert features
    kw = inputs(model, 0)
    close(*both(model, features=features, **kw))


def test_training_is_unaffected_and_the_plan_follows_the_weights(make_model, make_batch):
    """A training step gives the same loss and gradients with or without a cached plan;
    after the optimizer changed the weights the fast path still matches the reference."""
    model = make_model()
    twin = copy.deepcopy(model)
    kw = inputs(model, 0)
    close(*both(model.eval(), **kw))  # builds and caches the plan
    batch = make_batch(model)
    losses = []
    for m in (model.train(), twin.train()):
        torch.manual_seed(7)  # dropout, tau and noise
        loss, _ = m.compute_loss(batch)
        loss.backward()
        losses.append(loss.detach())
    assert torch.equal(losses[0], losses[1])
    for p, q in zip(model.system1.parameters(), twin.system1.parameters()):
        assert torch.equal(p.grad, q.grad)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    fast, ref = both(model.eval(), **kw)
    close(fast, ref)
    assert not torch.allclose(fast, both(twin.eval(), **kw)[0])  # the weights did move
    # replaced parameters (same values as the twin's) are noticed too
    model.load_state_dict({k: v.clone() for k, v in twin.state_dict().items()}, assign=True)
    close(both(model, **kw)[0], both(twin, **kw)[1])


def test_model_built_under_inference_mode(make_model):
    """Its parameters are inference tensors (no version counter): the plan still works."""
    with torch.inference_mode():
        model = make_model().eval()
        close(*both(model, **inputs(model, 0)))


def test_fast_path_only_without_grad_and_in_eval(make_model):
    """Autograd (RTC guidance, training) goes through System1.velocity, untouched."""
    model = make_model().eval()
    s1, kw = model.system1, inputs(model, 0)
    emb = kw['embodiment']
    with torch.enable_grad():
        assert not flow_sampler.supports(s1, emb)
        with pytest.raises(ValueError, match='grad disabled'):
            flow_sampler.sample(s1, kw['intent'], kw['obs_tokens'], kw['state'],
                                kw['state_mask'], emb, kw['noise'], 4)
        noisy = kw['noise'].clone().requires_grad_(True)
        context = s1.fuse(kw['intent'], kw['obs_tokens'])
        state = s1.encode_state(kw['state'], kw['state_mask'], emb)
        v = s1.velocity(context, state, noisy, torch.full((1,), 0.25), emb)
        v.square().sum().backward()
        assert noisy.grad is not None and noisy.grad.abs().sum() > 0
    with torch.no_grad():
        assert flow_sampler.supports(s1, emb)
        assert not flow_sampler.supports(s1.train(), emb)  # dropout: the reference loop
