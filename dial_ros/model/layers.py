"""Building blocks of System-1: attention, AdaLN DiT blocks, per-embodiment linears."""
import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention on ``F.scaled_dot_product_attention``; cross when ``kv_dim`` set."""

    def __init__(self, dim, heads, kv_dim=None):
        super().__init__()
        if dim % heads:
            raise ValueError(f'attention width {dim} is not divisible by {heads} heads')
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def keys_values(self, context):
        """(B, S, kv_dim) -> keys and values (B, heads, S, dim/heads); cacheable."""
        b, s, _ = context.shape
        k, v = self.kv(context).view(b, s, 2, self.heads, -1).unbind(2)
        return k.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x, context=None, key_padding_mask=None, kv=None):
        """``key_padding_mask``: (B, S) True where the context token may be attended.

        ``kv``: keys/values from :meth:`keys_values` when the context is reused (the fused
        tokens stay the same over the K flow steps of one chunk).
        """
        b, n, d = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = kv if kv is not None else self.keys_values(x if context is None else context)
        mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


def feed_forward(dim, mult=4):
    return nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(approximate='tanh'),
                         nn.Linear(dim * mult, dim))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention block (the fusion transformer); ``dropout`` on both
    residual branches."""

    def __init__(self, dim, heads, dropout=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = feed_forward(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.ff(self.norm2(x)))


class AdaLayerNorm(nn.Module):
    """LayerNorm whose scale and shift come from the flow-time embedding."""

    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.cond = nn.Linear(dim, 2 * dim)

    def forward(self, x, temb):
        scale, shift = self.cond(F.silu(temb)).unsqueeze(1).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class DiTBlock(nn.Module):
    """AdaLN -> (cross- or self-) attention -> LayerNorm -> feed-forward, both residual
    (``dropout`` on both branches)."""

    def __init__(self, dim, heads, context_dim=None, dropout=0.0):
        super().__init__()
        self.is_cross = context_dim is not None
        self.norm1 = AdaLayerNorm(dim)
        self.attn = Attention(dim, heads, kv_dim=context_dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.ff = feed_forward(dim)
        self.drop = nn.Dropout(dropout)

    def zero_init_residuals(self):
        """Make the block an identity map (used when a layer is inserted into a trained net)."""
        for linear in (self.attn.out, self.ff[-1]):
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, x, temb, context=None, kv=None):
        h = self.norm1(x, temb)
        if self.is_cross:
            x = x + self.drop(self.attn(h, context, kv=kv))
        else:
            x = x + self.drop(self.attn(h))
        return x + self.drop(self.ff(self.norm2(x)))


def sinusoidal_embedding(t, dim, max_period=10000.0):
    """Standard sinusoidal embedding of a (B,) or (B, T) tensor of time values."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEncoder(nn.Module):
    """Discretised flow time -> embedding for AdaLN."""

    def __init__(self, dim):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t_discrete):
        return self.mlp(sinusoidal_embedding(t_discrete, self.dim))


class CategorySpecificLinear(nn.Module):
    """A linear layer with one weight matrix per embodiment."""

    def __init__(self, num_categories, in_dim, out_dim):
        super().__init__()
        shape = (num_categories, in_dim, out_dim)
        self.weight = nn.Parameter(torch.empty(shape))
        # drawn where the parameter lives: nothing is allocated for a meta-device skeleton
        # (parts.parameters_on_meta); on the CPU the same numbers as before
        with torch.no_grad():
            self.weight.copy_(torch.randn(shape, device=self.weight.device) * in_dim ** -0.5)
        self.bias = nn.Parameter(torch.zeros(num_categories, out_dim))

    def forward(self, x, category):
        """x: (B, T, in_dim), category: (B,) long."""
        return torch.bmm(x, self.weight[category]) + self.bias[category].unsqueeze(1)


class CategorySpecificMLP(nn.Module):
    def __init__(self, num_categories, in_dim, hidden_dim, out_dim):
        super().__init__()
        self.layer1 = CategorySpecificLinear(num_categories, in_dim, hidden_dim)
        self.layer2 = CategorySpecificLinear(num_categories, hidden_dim, out_dim)

    def forward(self, x, category):
        return self.layer2(F.relu(self.layer1(x, category)), category)


class ActionEncoder(nn.Module):
    """Per-embodiment encoder of noisy action tokens, mixed with the flow-time embedding."""

    def __init__(self, num_categories, action_dim, dim):
        super().__init__()
        self.dim = dim
        self.w1 = CategorySpecificLinear(num_categories, action_dim, dim)
        self.w2 = CategorySpecificLinear(num_categories, 2 * dim, dim)
        self.w3 = CategorySpecificLinear(num_categories, dim, dim)

    def forward(self, actions, t_discrete, category):
        """actions: (B, H, action_dim), t_discrete: (B,) -> (B, H, dim)."""
        a = self.w1(actions, category)
        tau = sinusoidal_embedding(t_discrete, self.dim).unsqueeze(1).expand_as(a)
        x = F.silu(self.w2(torch.cat([a, tau], dim=-1), category))
        return self.w3(x, category)
