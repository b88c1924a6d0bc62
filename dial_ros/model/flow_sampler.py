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
(an optimizer step, ``load_state_dict``) bump version counters, ``.to()`` moves storage,
``load_state_dict(assign=True)`` replaces the parameter.
"""
import torch
import torch.nn.functional as F

from dial_ros.model.layers import sinusoidal_embedding


def supports(s1, embodiment):
    """Whether :func:`sample` can run: eval mode, no grad, one embodiment in the batch."""
    return (not s1.training and not torch.is_grad_enabled()
            and (embodiment.numel() == 1 or bool((embodiment == embodiment[0]).all())))


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
    context = _fuse(plan, condition, observation)
    x = torch.cat([state * state_mask, state_mask.to(state.dtype)], dim=-1).unsqueeze(1)
    state_token = _linear(F.relu(_linear(x, *plan.state1)), *plan.state2)
    kv = [None if block.kv is None else _keys_values(context, block.heads, *block.kv)
          for block in plan.blocks]
    actions = noise
    for terms in plan.steps:
        v = _velocity(plan, terms, state_token, actions, kv, features)
        actions = torch.add(actions, v, alpha=plan.dt)
    return actions


class _Block:
    """The weights of one (fusion or DiT) transformer block as plain tensors."""

    def __init__(self, block, dit):
        attn = block.attn
        self.heads = attn.heads
        self.cross = dit and block.is_cross
        if self.cross:  # keys/values come from the fused context, once per chunk
            self.q = attn.q.weight, attn.q.bias
            self.kv = attn.kv.weight, attn.kv.bias
        else:  # one matrix for q, k and v
            self.q = (torch.cat([attn.q.weight, attn.kv.weight]),
                      torch.cat([attn.q.bias, attn.kv.bias]))
            self.kv = None
        self.out = attn.out.weight, attn.out.bias
        norm1 = block.norm1.norm if dit else block.norm1
        self.norm1 = norm1.weight, norm1.bias, norm1.eps  # AdaLN: affine from the step terms
        self.norm2 = block.norm2.weight, block.norm2.bias, block.norm2.eps
        up, act, down = block.ff
        self.ff = up.weight, up.bias, act.approximate, down.weight, down.bias


class FlowPlan:
    """Weights and flow-time terms of one System-1 for (steps, embodiment, dtype, device)."""

    def __init__(self, s1, steps, e, dtype, device):
        # where each parameter lives, so that a replaced one (load_state_dict(assign=True))
        # is noticed as well as one changed in place
        self.slots = [(m._parameters, n) for m in s1.modules() for n in m._parameters
                      if m._parameters[n] is not None]
        self.fingerprint = self._fingerprint()
        self.dt = 1.0 / steps
        d = s1.cfg.dit_hidden
        types, pos = s1.type_embed.weight, s1.token_pos
        self.type_pos = types[0] + pos, types[1] + pos
        self.fusion_norm = (s1.fusion_norm.weight, s1.fusion_norm.bias, s1.fusion_norm.eps)
        self.fusion = [_Block(block, dit=False) for block in s1.fusion]
        self.state1 = _category(s1.state_encoder.layer1, e)
        self.state2 = _category(s1.state_encoder.layer2, e)
        enc = s1.action_encoder
        self.enc1, self.enc3 = _category(enc.w1, e), _category(enc.w3, e)
        w2, b2 = _category(enc.w2, e)
        self.enc2 = w2[:d]  # the rows that multiply the action half of cat([a, tau_emb])
        self.pos = s1.pos_embed.weight
        self.blocks = [_Block(block, dit=True) for block in s1.blocks]
        self.gates = [s1.gated_fusion[str(i)] if str(i) in s1.gated_fusion else None
                      for i in range(len(s1.blocks))]
        self.out_eps = s1.norm_out.eps
        self.dec1 = _category(s1.action_decoder.layer1, e)
        self.dec2 = _category(s1.action_decoder.layer2, e)
        self.steps = []
        for k in range(steps):
            # the flow time exactly as the reference loop makes it
            t = s1.timestep(torch.full((1,), k * self.dt, device=device, dtype=dtype))
            temb = s1.time_encoder(t)
            tau_emb = sinusoidal_embedding(t, enc.dim).to(dtype)
            self.steps.append((tau_emb @ w2[d:] + b2,
                               [_modulation(block.norm1.cond, temb) for block in s1.blocks],
                               _modulation(s1.out_modulation, temb)))

    def _fingerprint(self):
        params = [slot[name] for slot, name in self.slots]
        # inference tensors (a model built under inference_mode) have no version counter
        return [(id(p), p.data_ptr(), 0 if p.is_inference() else p._version) for p in params]

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


def _keys_values(context, heads, weight, bias):
    b, s, _ = context.shape
    k, v = F.linear(context, weight, bias).view(b, s, 2, heads, -1).unbind(2)
    return k.transpose(1, 2), v.transpose(1, 2)


def _layer(block, x, norm1, kv=None):
    """x + attention(norm1(x)), then x + feed_forward(norm2(x)); ``norm1``: LayerNorm's
    (weight, bias, eps)."""
    b, n, d = x.shape
    h = F.layer_norm(x, (d,), *norm1)
    if kv is None:
        q, k, v = F.linear(h, *block.q).view(b, n, 3, block.heads, -1).permute(2, 0, 3, 1, 4)
    else:
        q = F.linear(h, *block.q).view(b, n, block.heads, -1).transpose(1, 2)
        k, v = kv
    y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
    x = x + F.linear(y, *block.out)
    up, up_bias, approximate, down, down_bias = block.ff
    h = F.gelu(F.linear(F.layer_norm(x, (d,), *block.norm2), up, up_bias),
               approximate=approximate)
    return x + F.linear(h, down, down_bias)


def _fuse(plan, foresight, observation):
    x = torch.cat([foresight + plan.type_pos[0], observation + plan.type_pos[1]], dim=1)
    x = F.layer_norm(x, x.shape[-1:], *plan.fusion_norm)
    for block in plan.fusion:
        x = _layer(block, x, block.norm1)
    return x


def _velocity(plan, terms, state_token, actions, kv, features):
    enc2_bias, modulations, (out_scale, out_shift) = terms
    a = _linear(actions, *plan.enc1)
    b, h, d = a.shape
    a = F.silu(torch.addmm(enc2_bias, a.reshape(b * h, d), plan.enc2).view(b, h, d))
    x = torch.cat([state_token, _linear(a, *plan.enc3)], dim=1) + plan.pos
    fusion_index = 0
    for block, (scale, shift), block_kv, gate in zip(plan.blocks, modulations, kv, plan.gates):
        x = _layer(block, x, (scale, shift, block.norm1[2]), block_kv)
        if gate is not None:
            phi, phi_mask = features[fusion_index]
            x = gate(x, phi, phi_mask)
            fusion_index += 1
    x = F.layer_norm(x[:, 1:], (d,), out_scale, out_shift, plan.out_eps)
    return _linear(F.relu(_linear(x, *plan.dec1)), *plan.dec2)
