"""Where gradients flow in each stage."""
import pytest
import torch


def parts(model):
    ad = model.system2.adapter
    return {
        'vit': list(ad.vision.parameters()),
        'embed': [ad.embed_tokens.weight],
        'llm': list(ad.language_model.layers.parameters()),
        'queries': [model.system2.queries],
        'head': list(model.system2.head.parameters()),
        'system1': list(model.system1.parameters()),
    }


def reached(params):
    """True when some parameter got a non-zero gradient."""
    return any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params)


def untouched(params):
    return all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in params)


def backward_fm_only(model, batch):
    model.zero_grad(set_to_none=True)
    _, loss_fm = model.compute_losses(batch)
    assert float(loss_fm.detach()) > 0
    loss_fm.backward()
    return parts(model)


def test_warmup_action_loss_leaves_the_llm_untouched(make_model, make_batch):
    model = make_model()
    model.set_stage('warmup')
    p = backward_fm_only(model, make_batch(model))
    assert untouched(p['llm'] + p['queries'] + p['head'])
    assert reached(p['system1'])


def test_warmup_world_loss_trains_llm_and_queries_not_vit(make_model, make_batch):
    model = make_model()
    model.set_stage('warmup')
    loss, _ = model.compute_loss(make_batch(model))
    loss.backward()
    p = parts(model)
    assert reached(p['llm']) and reached(p['queries'])
    assert all(t.grad is None for t in p['vit'] + p['embed'])


def test_end_to_end_action_loss_reaches_llm_and_queries_never_vit(make_model, make_batch):
    model = make_model()
    model.set_stage('end_to_end')
    p = backward_fm_only(model, make_batch(model))
    assert reached(p['llm']), 'L_fm must reach the LLM blocks'
    assert reached(p['queries']), 'L_fm must reach the query rows'
    assert reached(p['head'])
    assert all(t.grad is None for t in p['vit'] + p['embed'])
    assert not any(t.requires_grad for t in p['vit'] + p['embed'])


def test_samples_without_actions_contribute_world_loss_only(make_model, make_batch):
    model = make_model()
    model.set_stage('end_to_end')
    batch = make_batch(model, batch_size=2, no_action=(0, 1))
    loss, metrics = model.compute_loss(batch)
    assert float(metrics['loss_fm']) == 0.0
    assert float(metrics['loss_world']) > 0
    loss.backward()
    assert untouched(model.system1.action_decoder.parameters())
    assert reached(parts(model)['llm'])


def test_partial_action_mask_ignores_masked_dims(make_model, make_batch):
    """Human wrist poses: only the 18 end-effector dims carry a target."""
    model = make_model()
    batch = make_batch(model, batch_size=2)
    batch['action_mask'][..., 18:] = False
    torch.manual_seed(0)
    _, a = model.compute_loss(batch)
    batch['actions'][..., 18:] += 100.0  # garbage in masked dims must not matter
    torch.manual_seed(0)
    _, b = model.compute_loss(batch)
    assert float(a['loss_fm']) == pytest.approx(float(b['loss_fm']), rel=1e-6)


def test_stage_names_are_checked(make_model):
    model = make_model()
    with pytest.raises(ValueError, match='stage'):
        model.set_stage('apt_language')
    with pytest.raises(ValueError, match='stage'):
        model.set_stage('warm-up')


def test_world_head_copy_splits_the_two_losses(make_model, make_batch):
    """end_to_end with world_head_copy: L_world trains the copy, never the action path's
    head; L_fm trains that head, never the copy; predict_future is the copy's output."""
    model = make_model(world_head_copy=True)
    model.set_stage('end_to_end')
    batch = make_batch(model)
    copy = list(model.system2.world_head.parameters())
    loss_world, _ = model.compute_losses(batch)
    loss_world.backward()
    assert reached(copy) and untouched(parts(model)['head'])
    p = backward_fm_only(model, batch)
    assert reached(p['head']) and untouched(copy)
    with torch.no_grad():
        for w in copy:
            w.add_(0.1)  # the heads now differ
        intent, _ = model.foresee(batch['obs_tokens'], batch['instructions'])
        future = model.predict_future(batch['obs_tokens'], batch['instructions'])
    assert future.shape == intent.shape and not torch.allclose(future, intent)
