"""RTC-style guided sampling: a new chunk that agrees with the one already being executed.

Black et al. 2025, "Real-Time Execution of Action Chunking Flow Policies": while the new chunk
is denoised, its steps that overlap what the running chunk has committed are inpainted
towards it, training-free (Pi-GDM guidance). At each Euler step with flow time tau:

    A1_hat = A_tau + (1 - tau) v(A_tau, tau)          (the one-step estimate of the chunk)
    g = (Y - A1_hat)^T diag(W) dA1_hat/dA_tau         (a vector-Jacobian product)
    v <- v + min(beta, (1 - tau) / (tau r2)) g,  r2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2)

``Y`` is the running chunk resampled at the new chunk's waypoint times and ``W`` the soft
mask of the paper's Eq. 5: 1 for the first ``delay`` steps (executed from the old chunk
before the new one can take over), exponentially decaying over the rest of the overlap, 0
beyond it. Costs one backward pass through System-1 per Euler step. No rclpy here.
"""
import math

import numpy as np
import torch

from dial_ros.core.chunking import INTERPOLATIONS, _Chunk


def soft_mask(horizon, delay, overlap):
    """Per-step guidance weights (H,) of Eq. 5.

    ``delay``: steps committed outright (weight 1); ``overlap``: steps of the new chunk that
    the running chunk still covers (weights decay from 1 towards 0 over ``delay..overlap``).
    """
    for name, value in (('horizon', horizon), ('delay', delay), ('overlap', overlap)):
        if not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f'{name}: expected an int >= 0, got {value!r}')
    overlap = min(int(overlap), int(horizon))
    delay = min(int(delay), overlap)
    w = np.zeros(horizon)
    w[:delay] = 1.0
    i = np.arange(delay, overlap)
    c = (overlap - i) / (overlap - delay + 1)
    w[delay:overlap] = c * np.expm1(c) / (math.e - 1.0)
    return w


def resample_prefix(previous, previous_t0, t0, dt, horizon, delay, interpolation='cubic'):
    """Guidance target and weights for a chunk observed at ``t0`` from the running one.

    ``previous``: the running chunk (H', A) in the model's normalised action space, its
    waypoint k at ``previous_t0 + k * dt``. Returns ``(Y (H, A), W (H,))``: the running chunk
    at ``t0 + k * dt`` (interpolated as the scheduler does), weights from :func:`soft_mask`
    over the steps it covers. ``delay`` in steps.
    """
    previous = np.asarray(previous, np.float64)
    if previous.ndim != 2 or len(previous) < 1:
        raise ValueError(f'previous: expected a (H, A) chunk, got shape {previous.shape}')
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f'interpolation: {interpolation!r} is not one of {INTERPOLATIONS}')
    if not (dt > 0 and math.isfinite(t0) and math.isfinite(previous_t0)):
        raise ValueError(f'dt/t0: need dt > 0 and finite stamps (dt {dt}, t0 {t0}, '
                         f'previous_t0 {previous_t0})')
    running = _Chunk(previous, previous_t0, dt, interpolation)
    times = t0 + np.arange(horizon) * dt
    target = np.stack([running.at(t) for t in times])
    # steps up to the running chunk's last waypoint (a step within 1 us of it counts)
    overlap = int(np.count_nonzero(times <= running.end + 1e-6))
    return target, soft_mask(horizon, int(delay), overlap)


def guidance_weight(tau, max_guidance):
    """min(beta, (1 - tau) / (tau r2)); its limit at tau = 0 is infinite, so beta there."""
    if tau <= 0.0:
        return max_guidance
    r2 = (1.0 - tau) ** 2 / (tau ** 2 + (1.0 - tau) ** 2)
    return min(max_guidance, (1.0 - tau) / (tau * r2))


@torch.no_grad()
def guided_sample_actions(model, intent, obs_tokens, state, state_mask, embodiment, prefix,
                          weights, max_guidance=5.0, features=(), steps=None, noise=None):
    """:meth:`DialModel.sample_actions` with the overlap guided towards ``prefix``.

    ``prefix``: (B, H, A) target in normalised units (padding dims anything); ``weights``:
    (B, H, A) per step and dim (0 on padding dims). Weights 0 give plain sampling. The model
    stays in eval mode; only the noisy actions get a gradient.
    """
    cfg = model.config.system1
    steps = steps or cfg.inference_steps
    b = obs_tokens.shape[0]
    shape = (b, cfg.horizon, cfg.max_action_dim)
    if tuple(prefix.shape) != shape or tuple(weights.shape) != shape:
        raise ValueError(f'prefix/weights: expected shape {shape}, got '
                         f'{tuple(prefix.shape)} / {tuple(weights.shape)}')
    if noise is None:
        noise = torch.randn(shape, device=obs_tokens.device)
    actions = noise.to(obs_tokens.dtype)
    prefix, weights = prefix.to(actions.dtype), weights.to(actions.dtype)
    s1 = model.system1
    context = s1.fuse(model._condition(intent), model.normalize_tokens(obs_tokens))
    state_token = s1.encode_state(state, state_mask, embodiment)
    cache = s1.context_cache(context)
    dt = 1.0 / steps
    for k in range(steps):
        tau_k = k * dt
        tau = torch.full((b,), tau_k, device=actions.device, dtype=actions.dtype)
        with torch.enable_grad():
            noisy = actions.detach().requires_grad_(True)
            v = s1.velocity(context, state_token, noisy, tau, embodiment, features, cache)
            estimate = noisy + (1.0 - tau_k) * v
            # VJP: (Y - A1_hat)^T W dA1_hat/dA_tau, through System-1 only w.r.t. the actions
            grad, = torch.autograd.grad(estimate, noisy, (prefix - estimate.detach()) * weights)
        actions = actions + dt * (v.detach() + guidance_weight(tau_k, max_guidance) * grad)
    return actions
