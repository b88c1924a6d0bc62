"""A small image decoder from frozen-ViT tokens to an RGB frame: foresight you can look at.

System-2 predicts the ViT tokens of the frame ``foresight_horizon`` steps ahead (64 tokens =
an 8x8 grid of width D). This decoder maps any such token grid back to pixels, so an operator
sees what the robot expects. It is trained on recorded frames and their ground-truth tokens
(``python -m dial_ros.train.foresight_decoder``); the ViT itself is untouched.

Architecture: the tokens are centred and scaled with the training set's statistics (most of
each token is the static scene; centring makes the part that moves what the decoder sees
first, as ``TokenNorm`` does for the two systems), put back on their 8x8 grid, then four
upsample + two 3x3 conv stages (8 -> 16 -> 32 -> 64 -> ``image_size``) whose output is
added to the logit of the training frames' mean image (it learns what differs from the
average scene), a sigmoid for RGB in [0, 1]. Nearest upsampling + conv instead of
transposed convs: no checkerboard artefacts. 115 k parameters, about 0.1 G multiply-adds a
frame at 112 px: 6-20 ms on one CPU core (idle vs loaded), so panels at 2 Hz cost a few per
cent of a core.

Stored beside a checkpoint as ``foresight_decoder.safetensors`` (weights and statistics)
plus ``foresight_decoder.json`` (this config and where it came from). No rclpy here.
"""
import dataclasses
import json
import math
import pathlib

import numpy as np
import torch
from torch import nn

WEIGHTS = 'foresight_decoder.safetensors'
CONFIG = 'foresight_decoder.json'
FORMAT = 'dial_ros/foresight-decoder-v1'


@dataclasses.dataclass
class DecoderConfig:
    """Shape of a foresight decoder; ``check`` raises ValueError naming a bad field."""

    num_tokens: int = 64      # a square grid: 64 = 8 x 8
    token_dim: int = 64       # D, the ViT's output width
    image_size: int = 112     # output side in px
    channels: tuple = (64, 32, 16, 8)   # per stage, at 16, 32, 64 and image_size px

    def check(self):
        side = math.isqrt(self.num_tokens)
        if self.num_tokens < 1 or side * side != self.num_tokens:
            raise ValueError(f'num_tokens: {self.num_tokens} is not a square grid')
        if self.token_dim < 1:
            raise ValueError(f'token_dim: {self.token_dim} must be >= 1')
        if len(self.channels) != 4 or min(self.channels) < 1:
            raise ValueError(f'channels: expected 4 positive widths, got {self.channels}')
        if self.image_size < 8 * side:
            raise ValueError(f'image_size: {self.image_size} must be >= {8 * side} (three '
                             f'doublings of the {side}x{side} grid)')
        return self

    @property
    def grid(self):
        return math.isqrt(self.num_tokens)


def _stage(cin, cout, size=None):
    up = nn.Upsample(size=size, mode='nearest') if size else nn.Upsample(scale_factor=2)
    return nn.Sequential(up, nn.Conv2d(cin, cout, 3, padding=1), nn.GELU(),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.GELU())


class ForesightDecoder(nn.Module):
    """ViT tokens (B, N, D) -> RGB (B, 3, S, S) in [0, 1]; see the module docstring."""

    def __init__(self, config=None):
        super().__init__()
        self.config = (config or DecoderConfig()).check()
        c, d = self.config.channels, self.config.token_dim
        self.register_buffer('token_mean', torch.zeros(self.config.num_tokens, d))
        self.register_buffer('token_scale', torch.ones(()))
        # logit of the training frames' mean image: the decoder learns what differs from it
        self.register_buffer('image_logit', torch.zeros(3, self.config.image_size,
                                                        self.config.image_size))
        self.stem = nn.Sequential(nn.Conv2d(d, c[0], 1), nn.GELU())
        self.stages = nn.Sequential(_stage(c[0], c[0]), _stage(c[0], c[1]), _stage(c[1], c[2]),
                                    _stage(c[2], c[3], size=self.config.image_size))
        self.out = nn.Conv2d(c[3], 3, 3, padding=1)

    def set_token_stats(self, mean, scale):
        """The training set's mean token map (N, D) and the rms of the centred tokens."""
        with torch.no_grad():
            self.token_mean.copy_(torch.as_tensor(np.asarray(mean), dtype=torch.float32))
            self.token_scale.fill_(float(scale))

    def set_mean_image(self, mean_image):
        """uint8 or float (S, S, 3) mean of the training frames (0..255)."""
        p = torch.as_tensor(np.asarray(mean_image, np.float32) / 255.0).clamp(0.01, 0.99)
        with torch.no_grad():
            self.image_logit.copy_(torch.logit(p).permute(2, 0, 1))

    def forward(self, tokens):
        cfg = self.config
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (cfg.num_tokens, cfg.token_dim):
            raise ValueError(f'tokens: expected shape (B, {cfg.num_tokens}, {cfg.token_dim}), '
                             f'got {tuple(tokens.shape)}')
        x = (tokens.float() - self.token_mean) / self.token_scale
        # token k sits at row k // side, column k % side (the ViT's merge order)
        x = x.transpose(1, 2).reshape(len(x), cfg.token_dim, cfg.grid, cfg.grid)
        return torch.sigmoid(self.out(self.stages(self.stem(x))) + self.image_logit)

    @torch.inference_mode()
    def decode(self, tokens):
        """(N, D) or (B, N, D) float array -> uint8 RGB (S, S, 3) or (B, S, S, 3)."""
        tokens = np.asarray(tokens, np.float32)
        single = tokens.ndim == 2
        if single:
            tokens = tokens[None]
        if not np.all(np.isfinite(tokens)):
            raise ValueError('tokens: contain NaN or Inf')
        out = []
        for k in range(0, len(tokens), 64):   # bounded memory for long stacks
            rgb = self(torch.from_numpy(np.ascontiguousarray(tokens[k:k + 64])))
            out.append((rgb.permute(0, 2, 3, 1) * 255.0 + 0.5).clamp(0, 255).to(torch.uint8))
        out = torch.cat(out).numpy()
        return out[0] if single else out


def psnr(a, b):
    """Peak signal-to-noise ratio (dB) of two uint8 images (or stacks), over all pixels."""
    err = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float('inf') if err == 0 else float(10.0 * np.log10(255.0 ** 2 / err))


def resize(frames, size):
    """uint8 (..., H, W, 3) frames -> (..., size, size, 3), area-averaged (PIL box filter)."""
    from PIL import Image
    frames = np.asarray(frames, np.uint8)
    if frames.shape[-3:-1] == (size, size):
        return frames
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = [np.asarray(Image.fromarray(f).resize((size, size), Image.BOX)) for f in flat]
    return np.stack(out).reshape(*frames.shape[:-3], size, size, 3)


def save_decoder(decoder, folder, **provenance):
    """Write the weights and the config (+ ``provenance``, e.g. metrics) into ``folder``."""
    from safetensors.torch import save_file
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in decoder.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={'format': FORMAT})
    meta = {'format': FORMAT, 'config': dataclasses.asdict(decoder.config), **provenance}
    (folder / CONFIG).write_text(json.dumps(meta, indent=1, sort_keys=True) + '\n')
    return folder / WEIGHTS


def decoder_path(checkpoint_folder):
    """Where a checkpoint's decoder lives: ``<folder>/foresight_decoder.safetensors``."""
    return pathlib.Path(checkpoint_folder) / WEIGHTS


def load_decoder(path):
    """A ForesightDecoder (eval mode) from its .safetensors file or the folder holding it.

    FileNotFoundError names the missing file and the command that trains one.
    """
    from safetensors.torch import load_file
    path = pathlib.Path(path)
    weights = path / WEIGHTS if path.is_dir() else path
    config = weights.with_name(CONFIG)
    for need in (weights, config):
        if not need.is_file():
            raise FileNotFoundError(
                f'foresight decoder: {need} not found; train one with `python -m '
                f'dial_ros.train.foresight_decoder --dataset DATASET --checkpoint '
                f'CHECKPOINT --out {weights.parent}`')
    meta = json.loads(config.read_text())
    if meta.get('format') != FORMAT:
        raise ValueError(f'{config}: format {meta.get("format")!r} is not {FORMAT!r}')
    fields = dict(meta['config'])
    fields['channels'] = tuple(fields.get('channels', DecoderConfig.channels))
    decoder = ForesightDecoder(DecoderConfig(**fields))
    decoder.load_state_dict(load_file(str(weights)))
    decoder.meta = meta
    return decoder.eval()
