"""Inference API with NumPy in and out, checked at the boundary.

Three calls, matching the three processes of the ROS graph:
``encode_frame`` (perception: frozen ViT), ``foresee`` (System-2: latent intent) and
``act`` (System-1: an action chunk in joint units). Every input is checked for dtype, shape
and finite values; a bad input raises ValueError naming the problem.
"""
import math

import numpy as np
import torch

from dial_ros.model.checkpoint import load_checkpoint
from dial_ros.model.rtc import guided_sample_actions


def check_image(image, size):
    """An RGB frame: uint8, (size, size, 3)."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f'image: expected a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise ValueError(f'image: expected dtype uint8 (rgb8), got {image.dtype}')
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image: expected shape (H, W, 3) RGB, got {image.shape}')
    if image.shape[:2] != (size, size):
        raise ValueError(f'image: expected size {size}x{size}, got '
                         f'{image.shape[1]}x{image.shape[0]}')
    return image


def check_array(name, value, shape):
    """A finite float array of exactly ``shape``."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f'{name}: expected a numpy array, got {type(value).__name__}')
    if not np.issubdtype(value.dtype, np.floating):
        raise ValueError(f'{name}: expected a float array, got dtype {value.dtype}')
    if value.shape != tuple(shape):
        raise ValueError(f'{name}: expected shape {tuple(shape)}, got {value.shape}')
    if not np.all(np.isfinite(value)):
        bad = 'NaN' if np.isnan(value).any() else 'Inf'
        raise ValueError(f'{name}: contains {bad}')
    return value


class DialPolicy:
    """A DIAL model bound to one embodiment, NumPy in and out."""

    def __init__(self, model, embodiment=None, device='cpu'):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        names = list(model.embodiments)
        name = embodiment or names[0]
        if name not in model.embodiments:
            raise ValueError(f'embodiment: {name!r} is not in the model (has {names})')
        self.embodiment = model.embodiments[name]
        cfg = model.config
        self.image_size = cfg.vlm.image_size
        self.token_shape = (cfg.num_foresight, model.token_dim)
        self.horizon = cfg.system1.horizon
        self.dtype = next(model.parameters()).dtype  # one dtype throughout the model
        # scale of the flow's starting noise: 1 samples the learned distribution, 0 starts
        # every chunk from zero noise (deterministic, the distribution's central path)
        self.noise_scale = 1.0
        self._embodiment_id = torch.tensor([self.embodiment.embodiment_id], device=self.device)

    @classmethod
    def from_checkpoint(cls, path, embodiment=None, device='cpu', part=None):
        return cls(load_checkpoint(path, device, part), embodiment, device)

    @property
    def part(self):
        """The part of the model this policy holds (None: all of it)."""
        return self.model.part

    def _need(self, part, call):
        if self.model.part not in (None, part):
            raise ValueError(f'{call}: this policy holds only the {self.model.part} part of '
                             f'the model; {call} needs the {part} part')

    @property
    def joint_names(self):
        return list(self.embodiment.joint_names)

    def _tensor(self, array):
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, self.dtype)[None]

    @torch.inference_mode()
    def encode_frame(self, image):
        """uint8 RGB frame (S, S, 3) -> frozen ViT tokens (N, D) float32."""
        self._need('vision', 'encode_frame')
        check_image(image, self.image_size)
        tokens = self.model.system2.encode_images(image[None])
        return tokens[0].float().cpu().numpy()

    @torch.inference_mode()
    def foresee(self, obs_tokens, instruction, return_features=False):
        """ViT tokens (N, D) + instruction -> latent intent (N, D) float32.

        With ``return_features`` (APT stage 2) also the gated-fusion features for ``act``.
        """
        self._need('system2', 'foresee')
        check_array('obs_tokens', obs_tokens, self.token_shape)
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError('instruction: expected a non-empty string')
        intent, features = self.model.foresee(self._tensor(obs_tokens), [instruction])
        intent = intent[0].float().cpu().numpy()
        if not np.all(np.isfinite(intent)):
            raise ValueError('intent: the model produced NaN/Inf (check the checkpoint)')
        return (intent, features) if return_features else intent

    @torch.inference_mode()
    def predict_future(self, obs_tokens, instruction):
        """The L_world prediction (N, D): ViT tokens of frame t+H.

        The intent itself unless the model has an L_world head copy (``world_head_copy``),
        whose action-path head then learns from L_fm only and leaves ViT-token space.
        """
        self._need('system2', 'predict_future')
        check_array('obs_tokens', obs_tokens, self.token_shape)
        predicted = self.model.predict_future(self._tensor(obs_tokens), [instruction])
        if predicted is None:
            raise ValueError('predict_future: this model (GR00T-style) predicts no future')
        return predicted[0].float().cpu().numpy()

    def act_normalized(self, obs_tokens, intent, joint_positions, seed=None, features=(),
                       eef=None, prefix=None, prefix_weights=None, max_guidance=5.0):
        """Raw model output: (H, action_dim) in normalised units.

        With ``prefix`` (H, action_dim), normalised, and ``prefix_weights`` (H,) in [0, 1]
        the chunk is sampled with RTC-style guidance towards the prefix (see
        :mod:`dial_ros.model.rtc`; ``max_guidance`` is its beta). Without them the plain
        sampler runs, unchanged.
        """
        self._need('system1', 'act')
        check_array('obs_tokens', obs_tokens, self.token_shape)
        check_array('intent', intent, self.token_shape)
        check_array('joint_positions', np.asarray(joint_positions, np.float64)
                    if isinstance(joint_positions, (list, tuple)) else joint_positions,
                    (self.embodiment.num_joints,))
        if self.model.system1.needs_vlm_features and not features:
            raise ValueError('features: this APT stage-2 model needs the gated-fusion features '
                             'returned by foresee(..., return_features=True)')
        guide = self._guidance(prefix, prefix_weights, max_guidance)
        cfg = self.model.config.system1
        state, mask = self.embodiment.encode_state(joint_positions, eef)
        state_pad = np.zeros(cfg.max_state_dim, np.float32)
        mask_pad = np.zeros(cfg.max_state_dim, bool)
        state_pad[:state.size], mask_pad[:mask.size] = state, mask
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        shape = (1, cfg.horizon, cfg.max_action_dim)
        noise = self.noise_scale * torch.randn(shape, generator=generator, device=self.device)
        inputs = (self._tensor(intent), self._tensor(obs_tokens), self._tensor(state_pad),
                  torch.from_numpy(mask_pad).to(self.device)[None], self._embodiment_id)
        if guide is None:
            with torch.inference_mode():
                actions = self.model.sample_actions(*inputs, features=features, noise=noise)
        else:  # autograd inside (a VJP per step): not in inference mode
            actions = guided_sample_actions(self.model, *inputs, *guide, max_guidance,
                                            features=features, noise=noise)
        return actions[0, :, :self.embodiment.action_dim].float().cpu().numpy()

    def _guidance(self, prefix, weights, max_guidance):
        """Padded (prefix, weights) tensors (1, H, max_action_dim), or None for plain sampling.

        Only the embodiment's real action dims are guided; the padding dims get weight 0.
        """
        if prefix is None and weights is None:
            return None
        if prefix is None or weights is None:
            raise ValueError('prefix/prefix_weights: give both or neither')
        a = self.embodiment.action_dim
        check_array('prefix', prefix, (self.horizon, a))
        check_array('prefix_weights', weights, (self.horizon,))
        if np.any(weights < 0) or np.any(weights > 1):
            raise ValueError('prefix_weights: must lie in [0, 1]')
        if not (isinstance(max_guidance, (int, float)) and 0 <= max_guidance < math.inf):
            raise ValueError(f'max_guidance: expected a finite number >= 0, got '
                             f'{max_guidance!r}')
        full = self.model.config.system1.max_action_dim
        target = np.zeros((self.horizon, full), np.float32)
        mask = np.zeros((self.horizon, full), np.float32)
        target[:, :a] = prefix
        mask[:, :a] = np.asarray(weights, np.float32)[:, None]
        return self._tensor(target), self._tensor(mask)

    def joint_targets(self, raw):
        """Normalised chunk (H, action_dim) -> joint position targets (H, J)."""
        return self.embodiment.joint_targets(self.embodiment.denormalize_action(raw))

    def act(self, obs_tokens, intent, joint_positions, seed=None, features=(), eef=None,
            prefix=None, prefix_weights=None, max_guidance=5.0):
        """Action chunk in joint units: (H, J) joint position targets in ``joint_names`` order.

        ``prefix``/``prefix_weights``/``max_guidance``: RTC-style guidance, as in
        :meth:`act_normalized` (the prefix in normalised units).
        """
        raw = self.act_normalized(obs_tokens, intent, joint_positions, seed, features, eef,
                                  prefix, prefix_weights, max_guidance)
        return self.joint_targets(raw)
