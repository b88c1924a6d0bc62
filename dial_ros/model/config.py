"""Model configuration: one schema for the tiny and the paper scale.

Defaults are the tiny scale (CPU, tests, embedded demo); ``paper_config()`` gives the sizes
of the DIAL paper (Qwen2.5-VL-3B System-2, 16-layer DiT System-1).
"""
import dataclasses

from dial_ros.schema import from_dict, setting, to_dict, validate

RECIPES = ('dial', 'apt', 'groot')
STAGES = ('warmup', 'end_to_end', 'apt_prior', 'apt_language', 'vlm_features')


@dataclasses.dataclass
class VLMConfig:
    """System-2: a Hugging Face image-text-to-text model with a vision tower."""

    scale: str = setting('tiny', 'tiny: built offline from config objects; paper: loaded from '
                         'a local checkpoint folder', choices=('tiny', 'paper'))
    path: str = setting('', 'local Hugging Face checkpoint folder (paper scale), e.g. '
                        'Qwen2.5-VL-3B-Instruct')
    model_class: str = setting('qwen2_5_vl', 'transformers model family',
                               choices=('qwen2_5_vl',))
    image_size: int = setting(224, 'square input frame size', low=56, high=1344, unit='px')
    dtype: str = setting('float32', 'weights dtype', choices=('float32', 'bfloat16', 'float16'))
    tiny_hidden: int = setting(64, 'tiny: LLM width (= ViT token width D)', low=16, high=4096)
    tiny_layers: int = setting(2, 'tiny: LLM layers', low=1, high=64)
    tiny_heads: int = setting(4, 'tiny: LLM attention heads', low=1, high=64)
    tiny_vision_hidden: int = setting(32, 'tiny: ViT width', low=16, high=4096)
    tiny_vision_depth: int = setting(2, 'tiny: ViT depth', low=1, high=64)
    tiny_vision_init: str = setting('random', 'tiny: ViT weights: random (drawn from seed) or '
                                    'effnet_lite0 (distilled from an ImageNet EfficientNet-'
                                    'Lite0 on the sim task frames, shipped in '
                                    'dial_ros/model/weights; needs the ViT sizes it was '
                                    'distilled at)', choices=('random', 'effnet_lite0'))
    seed: int = setting(0, 'tiny: initialisation seed', low=0)


@dataclasses.dataclass
class System1Config:
    """System-1: fusion transformer + flow-matching DiT (latent inverse dynamics)."""

    fusion_layers: int = setting(2, 'self-attention layers over [foresight, observation] '
                                 'tokens (paper: 4)', low=1, high=32)
    fusion_heads: int = setting(4, 'fusion attention heads', low=1, high=64)
    dit_layers: int = setting(4, 'DiT layers, alternating cross/self attention (paper: 16)',
                              low=2, high=64)
    dit_hidden: int = setting(64, 'DiT width (paper: 1536)', low=16, high=8192)
    dit_heads: int = setting(4, 'DiT attention heads (paper: 32)', low=1, high=128)
    dropout: float = setting(0.2, 'dropout on the residual branches of the fusion transformer '
                             'and the DiT while training (the official DIAL code: 0.2)',
                             low=0.0, high=0.9)
    horizon: int = setting(16, 'action chunk length H', low=1, high=256, unit='steps')
    max_action_dim: int = setting(128, 'actions padded to this width', low=1, high=1024)
    max_state_dim: int = setting(128, 'states padded to this width', low=1, high=1024)
    max_embodiments: int = setting(8, 'per-embodiment encoder/decoder slots', low=1, high=64)
    inference_steps: int = setting(4, 'Euler steps K at inference', low=1, high=100)
    tau_beta_alpha: float = setting(1.5, 'flow time tau ~ (s - Beta(a, b)) / s: a', low=0.01)
    tau_beta_beta: float = setting(1.0, 'flow time distribution: b', low=0.01)
    tau_s: float = setting(0.999, 'flow time distribution: s', low=0.5, high=1.0)
    timestep_buckets: int = setting(1000, 'flow time discretisation for the embedding',
                                    low=1, high=100000)


@dataclasses.dataclass
class ModelConfig:
    """The whole DIAL model."""

    vlm: VLMConfig = dataclasses.field(default_factory=VLMConfig)
    system1: System1Config = dataclasses.field(default_factory=System1Config)
    num_foresight: int = setting(64, 'foresight query tokens N (= ViT tokens per frame)',
                                 low=1, high=4096)
    foresight_horizon: int = setting(16, 'the intent predicts ViT tokens of frame t+H',
                                     low=1, high=1000, unit='steps')
    center_tokens: bool = setting(False, 'subtract the training set\'s mean ViT token map (per '
                                  'position and channel) and divide by the tokens\' spread '
                                  'before System-2 and System-1 read them; the statistics '
                                  'are computed by the trainer and saved with the model')
    world_head_copy: bool = setting(False, 'end_to_end: a copy of the MLP head takes L_world '
                                    'while the head that feeds System-1 learns from L_fm only '
                                    '(the official code\'s last stage)')
    recipe: str = setting('dial', 'action-expert recipe: dial (two-stage DIAL), apt '
                          '(vision-action prior, then gated language fusion) or groot (baseline: '
                          'System-1 on VLM features, no foresight)', choices=RECIPES)
    apt_fusion_points: int = setting(0, 'apt: VLM depths injected by gated fusion '
                                     '(0 = one per inserted layer)', low=0, high=64)
    embodiments: list = setting(['gr1_sim'], 'embodiment config names (config/embodiments)')

    def validate(self):
        validate(self)
        image_tokens = (self.vlm.image_size // 28) ** 2
        if self.vlm.image_size % 28:
            raise ValueError(f'vlm.image_size: {self.vlm.image_size} is not a multiple of 28 '
                             '(patch 14 x merge 2)')
        if self.num_foresight != image_tokens:
            raise ValueError(f'num_foresight: {self.num_foresight} must equal the ViT token '
                             f'count {image_tokens} at {self.vlm.image_size} px')
        if self.recipe == 'apt' and self.system1.dit_layers % 2:
            raise ValueError('system1.dit_layers: apt inserts one layer after each stage-1 '
                             'layer, so the full depth must be even')
        if not self.embodiments:
            raise ValueError('embodiments: at least one is needed')
        return self

    def to_dict(self):
        return to_dict(self)

    @classmethod
    def from_dict(cls, data):
        return from_dict(cls, data).validate()


def tiny_config(**overrides):
    """Tiny scale: a few hundred thousand parameters, CPU friendly."""
    return dataclasses.replace(ModelConfig(), **overrides).validate()


def paper_config(vlm_path='', **overrides):
    """The sizes of the DIAL paper: Qwen2.5-VL-3B System-2 and a 16-layer DiT System-1."""
    config = ModelConfig(
        vlm=VLMConfig(scale='paper', path=vlm_path, dtype='bfloat16'),
        system1=System1Config(fusion_layers=4, fusion_heads=16, dit_layers=16,
                              dit_hidden=1536, dit_heads=32),
    )
    return dataclasses.replace(config, **overrides).validate()
