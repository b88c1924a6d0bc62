"""System-1: latent inverse dynamics. Foresight + observation ViT tokens + state -> actions.

It sees no language: only the latent intent (predicted ViT tokens of frame t+H), the current
frame's ViT tokens and the robot state. Shapes: tokens (B, N, D), state (B, S), actions
(B, H, A) with S/A padded to ``max_state_dim``/``max_action_dim`` and masks marking the real
dims.
"""
import torch
from torch import nn

from dial_ros.model.layers import (ActionEncoder, Attention, CategorySpecificMLP, DiTBlock,
                                   TimestepEncoder, TransformerBlock)


class GatedFusion(nn.Module):
    """APT stage-2 language injection: h + tanh(g) * CrossAttn(LN(h), W phi).

    ``g`` is a per-channel gate initialised at zero, so inserting the fusion leaves the
    stage-1 prior exactly unchanged until training opens the gate.
    """

    def __init__(self, dim, heads, vlm_dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(vlm_dim, dim)
        self.attn = Attention(dim, heads)
        self.gate = nn.Parameter(torch.zeros(dim))

    def forward(self, h, phi, phi_mask):
        return h + torch.tanh(self.gate) * self.attn(self.norm(h), self.proj(phi), phi_mask)


class System1(nn.Module):
    """Fusion transformer + flow-matching DiT with per-embodiment encoders/decoders."""

    def __init__(self, cfg, vlm_dim, num_layers=None, num_tokens=64):
        super().__init__()
        self.cfg = cfg
        d = cfg.dit_hidden
        self.type_embed = nn.Embedding(2, vlm_dim)  # 0: foresight, 1: current observation
        # Where each token lies in the 8x8 grid, shared by foresight and observation tokens.
        # Self- and cross-attention are blind to token order, and the ViT's 2D rotary
        # positions are relative, so without it System-1 cannot tell where in the image
        # (e.g. how far away) the object is: measured R^2 0.35 for the shoulder pitch that
        # sets the reach depth, against 0.83-0.98 for the other arm joints.
        self.token_pos = nn.Parameter(torch.zeros(num_tokens, vlm_dim))
        # std 0.02 (the Hugging Face initializer_range) instead of nn.Embedding's N(0, 1):
        # a unit-scale type vector would drown small ViT features in the LayerNorm
        nn.init.normal_(self.type_embed.weight, std=0.02)
        nn.init.normal_(self.token_pos, std=0.02)
        self.fusion_norm = nn.LayerNorm(vlm_dim)
        self.fusion = nn.ModuleList(TransformerBlock(vlm_dim, cfg.fusion_heads, cfg.dropout)
                                    for _ in range(cfg.fusion_layers))
        e = cfg.max_embodiments
        # the state mask goes in too: a human demo has wrist poses but no joint angles
        self.state_encoder = CategorySpecificMLP(e, 2 * cfg.max_state_dim, d, d)
        self.action_encoder = ActionEncoder(e, cfg.max_action_dim, d)
        self.action_decoder = CategorySpecificMLP(e, d, d, cfg.max_action_dim)
        self.pos_embed = nn.Embedding(cfg.horizon + 1, d)
        self.time_encoder = TimestepEncoder(d)
        layers = cfg.dit_layers if num_layers is None else num_layers
        self.blocks = nn.ModuleList(self._block(i, vlm_dim) for i in range(layers))
        self.gated_fusion = nn.ModuleDict()  # block index -> GatedFusion (APT stage 2)
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False)
        self.out_modulation = nn.Linear(d, 2 * d)

    def _block(self, index, vlm_dim):
        # even blocks cross-attend to the fused tokens, odd blocks self-attend
        return DiTBlock(self.cfg.dit_hidden, self.cfg.dit_heads,
                        context_dim=vlm_dim if index % 2 == 0 else None,
                        dropout=self.cfg.dropout)

    def insert_layers(self, vlm_dim):
        """APT stage 2: a new self-attention layer after each stage-1 layer, fed by gated fusion.

        New layers start as identity maps and gates at zero: the prior is preserved exactly.
        Returns the number of fusion points (one per inserted layer).
        """
        d, heads = self.cfg.dit_hidden, self.cfg.dit_heads
        blocks = []
        for block in self.blocks:
            param = next(block.parameters())
            new = DiTBlock(d, heads, dropout=self.cfg.dropout).to(param.device, param.dtype)
            new.zero_init_residuals()
            blocks += [block, new]
            fusion = GatedFusion(d, heads, vlm_dim).to(param.device, param.dtype)
            self.gated_fusion[str(len(blocks) - 1)] = fusion
        self.blocks = nn.ModuleList(blocks)
        return len(self.gated_fusion)

    def fuse(self, foresight, observation):
        """(B, N, D) x 2 -> fused context (B, 2N, D); run once per chunk."""
        types, pos = self.type_embed.weight, self.token_pos
        x = torch.cat([foresight + types[0] + pos, observation + types[1] + pos], dim=1)
        x = self.fusion_norm(x)
        for block in self.fusion:
            x = block(x)
        return x

    def encode_state(self, state, state_mask, embodiment):
        """(B, S), (B, S) bool -> state token (B, 1, d); run once per chunk."""
        x = torch.cat([state * state_mask, state_mask.to(state.dtype)], dim=-1).unsqueeze(1)
        return self.state_encoder(x, embodiment)

    def timestep(self, tau):
        """Flow time in [0, 1] -> discrete bucket used by the embeddings."""
        return (tau * self.cfg.timestep_buckets).long()

    def context_cache(self, context):
        """Cross-attention keys/values of the fused tokens, reused over the K flow steps."""
        return {i: block.attn.keys_values(context) for i, block in enumerate(self.blocks)
                if block.is_cross}

    def velocity(self, context, state_token, noisy_actions, tau, embodiment, vlm_features=None,
                 cache=None):
        """Predict the flow velocity (B, H, A) for noisy actions at flow time tau (B,).

        ``vlm_features``: list of (features (B, S, D), mask (B, S)) per gated-fusion point.
        ``cache``: from :meth:`context_cache` for the same context.
        """
        t = self.timestep(tau)
        temb = self.time_encoder(t)
        actions = self.action_encoder(noisy_actions, t, embodiment)
        x = torch.cat([state_token, actions], dim=1) + self.pos_embed.weight
        fusion_index = 0
        for i, block in enumerate(self.blocks):
            x = block(x, temb, context, kv=None if cache is None else cache.get(i))
            gate = self.gated_fusion[str(i)] if str(i) in self.gated_fusion else None
            if gate is not None:
                phi, phi_mask = vlm_features[fusion_index]
                x = gate(x, phi, phi_mask)
                fusion_index += 1
        scale, shift = self.out_modulation(torch.nn.functional.silu(temb)).unsqueeze(1).chunk(
            2, dim=-1)
        x = self.norm_out(x) * (1 + scale) + shift
        return self.action_decoder(x[:, 1:], embodiment)

    @property
    def needs_vlm_features(self):
        return len(self.gated_fusion) > 0
