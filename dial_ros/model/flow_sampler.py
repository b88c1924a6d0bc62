"""System-1's inference path: one action chunk (fuse, state token, K Euler flow steps), fast.

The arithmetic of the reference loop in ``DialModel.sample_actions`` (``System1.fuse``,
``encode_state``, ``context_cache`` and K calls of ``System1.velocity``), equal to float32
rounding, in fewer and smaller ops. The tiny deployed model spends its time on per-op
overhead and on reading weights, so what does not change between chunks is computed once:

- what depends only on the flow time (the K taus of K steps are fixed): the timestep
  embedding, the AdaLN scale/shift of every DiT block, the output modulation, and the
  flow-time half of the action encoder's second layer (a bias per step);
- the embodiment's slices of the per-embodiment linears, as views (no gather per call);
- self-attention's q and kv projections as one matrix.

Inference only: :func:`sample` refuses grad mode and training mode (dropout); training and
autograd-guided sampling use ``System1.velocity``, which this module leaves untouched. The
plan is cached on the System-1 module and rebuilt when a parameter changes: in-place updates
(an optimizer step, ``load_state_dict``) bump version counters, ``.to()`` moves storage.
"""
import torch
import torch.nn.functional as F

from dial_ros.model.layers import sinusoidal_embedding


def supports(s1, embodiment):
    """Whether :func:`sample` can run: eval mode, no grad, one embodiment in the batch."""
    return (not s1.training and not torch.is_grad_enabled()
            and bool((embodiment == embodiment[0]).all()))


def sample(s1, condition, observation, state, state_mask, embodiment, noise, steps,
           features=()):
    """Action chunk (B, H, A) from noise (B, H, A) after ``steps`` Euler steps.

    ``condition``/``observation``: the normalised tokens ``System1.fuse`` takes; the other
    arguments as for ``System1.encode_state`` and ``System1.velocity``.
    """
    if not supports(s1, embodiment):
        raise ValueError('flow_sampler.sample: needs eval mode, grad disabled and one '
                         'embodiment per batch (use System1.velocity otherwise)')
    plan = _plan(s1, steps, int(embodiment[0]), noise.dtype, noise.device)
    context = _fuse(s1, plan, condition, observation)
    x = torch.cat([state * state_mask, state_mask.to(state.dtype)], dim=-1).unsqueeze(1)
    state_token = _linear(F.relu(_linear(x, *plan.state1)), *plan.state2)
    kv = {i: block.attn.keys_values(context) for i, block in enumerate(s1.blocks)
          if block.is_cross}
    actions = noise
    for terms in plan.steps:
        v = _velocity(s1, plan, terms, state_token, actions, kv, features)
        actions = torch.add(actions, v, alpha=plan.dt)
    return actions


class FlowPlan:
    """Weights and flow-time terms of one System-1 for (steps, embodiment, dtype, device)."""

    def __init__(self, s1, steps, e, dtype, device):
        self.params = list(s1.parameters())
        self.fingerprint = self._fingerprint()
        self.dt = 1.0 / steps
        d = s1.cfg.dit_hidden
        self.state1 = _category(s1.state_encoder.layer1, e)
        self.state2 = _category(s1.state_encoder.layer2, e)
        enc = s1.action_encoder
        self.enc1, self.enc3 = _category(enc.w1, e), _category(enc.w3, e)
        w2, b2 = _category(enc.w2, e)
        self.enc2 = w2[:d]  # the rows that multiply the action half of cat([a, tau_emb])
        self.dec1 = _category(s1.action_decoder.layer1, e)
        self.dec2 = _category(s1.action_decoder.layer2, e)
        self.fusion_qkv = [_fused_qkv(block.attn) for block in s1.fusion]
        self.qkv = [None if block.is_cross else _fused_qkv(block.attn) for block in s1.blocks]
        self.steps = []
        for k in range(steps):
            # the flow time exactly as the reference loop makes it
            t = s1.timestep(torch.full((1,), k * self.dt, device=device, dtype=dtype))
            temb = s1.time_encoder(t)
            tau_emb = sinusoidal_embedding(t, enc.dim).to(dtype)
            self.steps.append({
                'enc2_bias': tau_emb @ w2[d:] + b2,
                'blocks': [_modulation(block.norm1.cond, temb) for block in s1.blocks],
                'out': _modulation(s1.out_modulation, temb),
            })

    def _fingerprint(self):
        return [(p._version, p.data_ptr()) for p in self.params]

    def valid(self):
        return self.fingerprint == self._fingerprint()


def _plan(s1, steps, e, dtype, device):
    plans = s1.__dict__.setdefault('_flow_plans', {})
    # the layer counts change when APT stage 2 inserts layers (new parameters)
    key = (steps, e, dtype, device, len(s1.blocks), len(s1.gated_fusion))
    plan = plans.get(key)
    if plan is None or not plan.valid():
        plans.clear()  # any change of the weights makes every plan stale
        plan = plans[key] = FlowPlan(s1, steps, e, dtype, device)
    return plan


def _category(linear, e):
    """(weight (in, out), bias (out,)) of embodiment ``e`` of a ``CategorySpecificLinear``."""
    return linear.weight[e], linear.bias[e]


def _fused_qkv(attn):
    return torch.cat([attn.q.weight, attn.kv.weight]), torch.cat([attn.q.bias, attn.kv.bias])


def _modulation(cond, temb):
    """AdaLN (1 + scale, shift), each (d,), as ``AdaLayerNorm`` computes them.

    One flow time for the whole batch, so they are LayerNorm's affine weight and bias.
    """
    scale, shift = cond(F.silu(temb)).chunk(2, dim=-1)
    return (1 + scale).reshape(-1), shift.reshape(-1)


def _linear(x, weight, bias):
    """(B, T, in) @ (in, out) + bias: a per-embodiment linear with the weights selected."""
    b, t, _ = x.shape
    return torch.addmm(bias, x.reshape(b * t, -1), weight).view(b, t, -1)


def _layer_norm(norm, x):
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _feed_forward(ff, x):
    up, act, down = ff
    return F.linear(F.gelu(F.linear(x, up.weight, up.bias), approximate=act.approximate),
                    down.weight, down.bias)


def _attention(attn, x, qkv=None, kv=None):
    """Self-attention with the fused ``qkv`` projection, or cross-attention on cached ``kv``."""
    b, n, d = x.shape
    if kv is None:
        q, k, v = F.linear(x, *qkv).view(b, n, 3, attn.heads, -1).permute(2, 0, 3, 1, 4)
    else:
        q = F.linear(x, attn.q.weight, attn.q.bias).view(b, n, attn.heads, -1).transpose(1, 2)
        k, v = kv
    y = F.scaled_dot_product_attention(q, k, v)
    return F.linear(y.transpose(1, 2).reshape(b, n, d), attn.out.weight, attn.out.bias)


def _fuse(s1, plan, foresight, observation):
    types, pos = s1.type_embed.weight, s1.token_pos
    x = torch.cat([foresight + types[0] + pos, observation + types[1] + pos], dim=1)
    x = _layer_norm(s1.fusion_norm, x)
    for block, qkv in zip(s1.fusion, plan.fusion_qkv):
        x = x + _attention(block.attn, _layer_norm(block.norm1, x), qkv=qkv)
        x = x + _feed_forward(block.ff, _layer_norm(block.norm2, x))
    return x


def _velocity(s1, plan, terms, state_token, actions, kv, features):
    a = _linear(actions, *plan.enc1)
    b, h, d = a.shape
    a = F.silu(torch.addmm(terms['enc2_bias'], a.reshape(b * h, d), plan.enc2).view(b, h, d))
    x = torch.cat([state_token, _linear(a, *plan.enc3)], dim=1) + s1.pos_embed.weight
    fusion_index = 0
    for i, block in enumerate(s1.blocks):
        hidden = F.layer_norm(x, x.shape[-1:], *terms['blocks'][i], block.norm1.norm.eps)
        x = x + _attention(block.attn, hidden, qkv=plan.qkv[i], kv=kv.get(i))
        x = x + _feed_forward(block.ff, _layer_norm(block.norm2, x))
        gate = s1.gated_fusion[str(i)] if str(i) in s1.gated_fusion else None
        if gate is not None:
            phi, phi_mask = features[fusion_index]
            x = gate(x, phi, phi_mask)
            fusion_index += 1
    x = F.layer_norm(x[:, 1:], x.shape[-1:], *terms['out'], s1.norm_out.eps)
    return _linear(F.relu(_linear(x, *plan.dec1)), *plan.dec2)
