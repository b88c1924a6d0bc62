"""The DIAL model: System-2 (foresight) + System-1 (latent inverse dynamics), losses, stages.

Stages (``set_stage``):
- ``warmup``: System-1 is conditioned on the ground-truth future ViT tokens, so the action
  loss cannot reach the VLM; System-2 learns L_world in the same step.
- ``end_to_end``: System-1 consumes the predicted intent; L_fm flows through the MLP head
  into the LLM and the query embeddings. L_world stays on.
- ``apt_prior`` (APT stage 1): LLM frozen, the instruction masked out of System-2's attention
  and positions, System-1 at half depth: a language-free vision-action prior.
- ``apt_language`` (APT stage 2): a new layer after each stage-1 layer, language unmasked,
  LLM features of evenly spaced depths injected through zero-initialised gated fusion.
- ``vlm_features`` (the GR00T-style baseline, one stage): no foresight bottleneck. System-1
  is conditioned on the VLM's last-layer hidden states at the current frame's image tokens
  (fine-tuned end to end through L_fm, as "GR00T-style, fine-tuned VLM" in the DIAL paper);
  there is no L_world. Same shape (B, N, D) as the intent, so the nodes run it unchanged.
  The image tokens precede the instruction in the causal prompt, so these features do not
  see the language: harmless on a one-instruction task, a limit on multi-task data.
In every stage the ViT and the text embedding table stay frozen.
"""
import copy
import logging

import torch
import torch.nn.functional as F
from torch import nn

from dial_ros.model import flow_sampler
from dial_ros.model.config import STAGES
from dial_ros.model.system1 import System1
from dial_ros.model.system2 import Qwen25VLAdapter, System2

LOG = logging.getLogger(__name__)
RECIPE_STAGES = {'dial': ('warmup', 'end_to_end'), 'apt': ('apt_prior', 'apt_language'),
                 'groot': ('vlm_features', 'vlm_features')}
# stages in which System-1 is conditioned on the ground-truth future tokens
TEACHER_FORCED = ('warmup', 'apt_prior')


class TokenNorm(nn.Module):
    """(tokens - mean map) / scale, with the statistics of the training set's ViT tokens.

    With a frozen (here random) ViT most of each token is the static scene; the part that
    moves with the cube and the arm is a few per cent of it. Centring per position and
    channel makes that part what the systems see first. Buffers: saved with the weights.
    """

    def __init__(self, num_tokens, dim):
        super().__init__()
        self.register_buffer('mean', torch.zeros(num_tokens, dim))
        self.register_buffer('scale', torch.ones(()))

    def set_stats(self, mean, scale):
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
            self.scale.fill_(float(scale))

    def forward(self, tokens):
        return (tokens - self.mean.to(tokens.dtype)) / self.scale.to(tokens.dtype)


def masked_mse(pred, target, mask):
    """Mean squared error over the masked entries (0 when nothing is masked in)."""
    mask = mask.to(pred.dtype)
    return ((pred - target) ** 2 * mask).sum() / mask.sum().clamp(min=1.0)


class DialModel(nn.Module):
    """Both systems, joined by the latent intent."""

    def __init__(self, config, embodiments, adapter=None):
        super().__init__()
        self.config = config
        cfg1 = config.system1
        self.embodiments = {e.name: e for e in embodiments}
        for e in embodiments:
            if e.embodiment_id >= cfg1.max_embodiments:
                raise ValueError(f'{e.name}.embodiment_id: {e.embodiment_id} >= '
                                 f'system1.max_embodiments {cfg1.max_embodiments}')
            if e.action_dim > cfg1.max_action_dim or e.state_dim > cfg1.max_state_dim:
                raise ValueError(f'{e.name}: action/state dims {e.action_dim}/{e.state_dim} '
                                 f'exceed max {cfg1.max_action_dim}/{cfg1.max_state_dim}')
        self.system2 = System2(adapter or Qwen25VLAdapter.build(config.vlm),
                               config.num_foresight)
        dim = self.token_dim = self.system2.hidden_size
        depth = cfg1.dit_layers // 2 if config.recipe == 'apt' else cfg1.dit_layers
        self.system1 = System1(cfg1, dim, num_layers=depth, num_tokens=config.num_foresight)
        self.system1.to(self.system2.queries.dtype)
        self.token_norm = TokenNorm(config.num_foresight, dim) if config.center_tokens else None
        self.part = None  # the whole model; see dial_ros.model.parts
        self.stage = None
        self.set_stage(RECIPE_STAGES[config.recipe][0])

    # --- stages --------------------------------------------------------------------------
    def set_stage(self, stage):
        """Select the training stage and the parameters it trains."""
        allowed = RECIPE_STAGES[self.config.recipe]
        if stage not in STAGES or stage not in allowed:
            raise ValueError(f'stage: {stage!r} is not a stage of recipe '
                             f'{self.config.recipe!r} (one of {allowed})')
        if stage == 'apt_prior' and self.system1.needs_vlm_features:
            raise ValueError('stage: apt_prior cannot follow apt_language (layers inserted)')
        if stage == 'apt_language' and not self.system1.needs_vlm_features:
            points = self.system1.insert_layers(self.system2.hidden_size)
            LOG.info('APT stage 2: inserted %d layers with gated fusion', points)
        if stage == 'end_to_end' and self.config.world_head_copy and \
                self.system2.world_head is None:
            self.system2.world_head = copy.deepcopy(self.system2.head)
        self.stage = stage
        for p in self.parameters():
            p.requires_grad_(False)
        for p in self.system1.parameters():
            p.requires_grad_(True)
        self.system2.queries.requires_grad_(True)
        heads = [self.system2.head, self.system2.world_head]
        for p in (p for head in heads if head is not None for p in head.parameters()):
            p.requires_grad_(True)
        if stage != 'apt_prior':
            llm = self.system2.adapter.language_model
            for p in list(llm.layers.parameters()) + list(llm.norm.parameters()):
                p.requires_grad_(True)
        self.system2.adapter.freeze_vision_and_embeddings()

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def fusion_depths(self):
        """Evenly spaced LLM depths (indices into the hidden-state tuple) for gated fusion."""
        if self.system1 is not None:
            points = len(self.system1.gated_fusion)
        else:  # System-2 alone (intent node): one point per stage-1 layer once inserted
            points = self.config.system1.dit_layers // 2 if self.stage == 'apt_language' else 0
        if points == 0:
            return ()
        if self.config.apt_fusion_points and self.config.apt_fusion_points != points:
            raise ValueError(f'apt_fusion_points: {self.config.apt_fusion_points} does not '
                             f'match the {points} inserted layers')
        layers = self.system2.adapter.num_layers
        return tuple(max(1, round((i + 1) * layers / points)) for i in range(points))

    # --- forward pieces ------------------------------------------------------------------
    def normalize_tokens(self, tokens):
        """ViT tokens as the two systems read them (centred with ``center_tokens``)."""
        return tokens if self.token_norm is None else self.token_norm(tokens)

    def _condition(self, condition):
        # the foresight lives in ViT-token space; the GR00T-style features do not
        return condition if self.stage == 'vlm_features' else self.normalize_tokens(condition)

    def foresee(self, obs_tokens, instructions):
        """Latent intent (B, N, D) and the gated-fusion features for System-1."""
        intent, features, _ = self._foresee(obs_tokens, instructions)
        return intent, features

    def predict_future(self, obs_tokens, instructions):
        """The L_world prediction (B, N, D), or None for the GR00T-style baseline."""
        return self._foresee(obs_tokens, instructions)[2]

    def _foresee(self, obs_tokens, instructions):
        """(condition for System-1, gated-fusion features, prediction for L_world)."""
        intent, ctx = self.system2(self.normalize_tokens(obs_tokens), instructions,
                                   mask_language=self.stage == 'apt_prior',
                                   hidden_layers=self.fusion_depths())
        features = [(layer, ctx['mask']) for layer in ctx['layers']]
        if self.stage == 'vlm_features':
            return ctx['image_features'], features, None
        world = self.system2.world_head
        return intent, features, intent if world is None else world(ctx['query_states'])

    def sample_tau(self, batch_size, device):
        cfg = self.config.system1
        beta = torch.distributions.Beta(torch.tensor(cfg.tau_beta_alpha),
                                        torch.tensor(cfg.tau_beta_beta))
        return ((cfg.tau_s - beta.sample((batch_size,))) / cfg.tau_s).to(device)

    def compute_loss(self, batch):
        """L = (L_world + L_fm) / 2 for one batch (see module docstring for the stages).

        batch: obs_tokens / future_tokens (B, N, D) (or images / future_images uint8),
        instructions (list of B str), state and state_mask (B, S), actions and action_mask
        (B, H, A) in normalised units (a sample without actions has an all-False mask),
        embodiment (B,) long.
        """
        loss_world, loss_fm = self.compute_losses(batch)
        # the GR00T-style baseline has no world model: its loss is L_fm alone
        loss = loss_fm if self.stage == 'vlm_features' else 0.5 * (loss_world + loss_fm)
        return loss, {'loss': loss.detach(), 'loss_world': loss_world.detach(),
                      'loss_fm': loss_fm.detach()}

    def compute_losses(self, batch):
        """(L_world, L_fm) as differentiable scalars."""
        obs = self._tokens(batch, 'obs_tokens', 'images')
        future = self._tokens(batch, 'future_tokens', 'future_images')
        intent, features, predicted = self._foresee(obs, batch['instructions'])
        if predicted is None:
            loss_world = torch.zeros((), device=obs.device)  # no foresight to supervise
        else:
            loss_world = F.mse_loss(predicted.float(), future.float())
        condition = future if self.stage in TEACHER_FORCED else intent
        mask = batch['action_mask']
        # padded / missing dims are zero, as at inference, so they carry no information
        actions = batch['actions'].to(intent.dtype) * mask
        noise = torch.randn_like(actions)
        tau = self.sample_tau(actions.shape[0], actions.device).to(actions.dtype)
        noisy = tau[:, None, None] * actions + (1 - tau[:, None, None]) * noise
        context = self.system1.fuse(self._condition(condition), self.normalize_tokens(obs))
        state = self.system1.encode_state(batch['state'].to(intent.dtype), batch['state_mask'],
                                          batch['embodiment'])
        velocity = self.system1.velocity(context, state, noisy, tau, batch['embodiment'],
                                         features)
        loss_fm = masked_mse(velocity.float(), (actions - noise).float(), mask)
        return loss_world, loss_fm

    def _tokens(self, batch, key, image_key):
        if key in batch:
            return batch[key].to(self.system2.queries.dtype)
        if image_key in batch:
            return self.system2.encode_images(batch[image_key])
        raise ValueError(f'batch: needs {key!r} or {image_key!r}')

    @torch.no_grad()
    def sample_actions(self, intent, obs_tokens, state, state_mask, embodiment, features=(),
                       steps=None, noise=None, generator=None, fast=True):
        """K Euler steps of the flow from noise (tau=0) to actions (tau=1): (B, H, A).

        ``fast``: run :mod:`dial_ros.model.flow_sampler` (same result to float32 rounding)
        where it applies (eval mode, one embodiment); False: the reference loop below.
        """
        cfg = self.config.system1
        steps = steps or cfg.inference_steps
        b = obs_tokens.shape[0]
        shape = (b, cfg.horizon, cfg.max_action_dim)
        if noise is None:
            noise = torch.randn(shape, generator=generator, device=obs_tokens.device)
        actions = noise.to(obs_tokens.dtype)
        condition, obs = self._condition(intent), self.normalize_tokens(obs_tokens)
        if fast and flow_sampler.supports(self.system1, embodiment):
            return flow_sampler.sample(self.system1, condition, obs, state, state_mask,
                                       embodiment, actions, steps, features)
        context = self.system1.fuse(condition, obs)
        state_token = self.system1.encode_state(state, state_mask, embodiment)
        cache = self.system1.context_cache(context)
        dt = 1.0 / steps
        for k in range(steps):
            tau = torch.full((b,), k * dt, device=actions.device, dtype=actions.dtype)
            v = self.system1.velocity(context, state_token, actions, tau, embodiment, features,
                                      cache)
            actions = actions + dt * v
        return actions
