"""Image augmentation of the official DIAL recipe: random crop + resize, colour jitter.

The current and the future frame of a sample get the *same* crop and jitter (the official
code transforms them together), so the foresight target moves with the observation. The
crop keeps ``crop_scale`` .. 1 of the image area at a random place and resizes it back to
the input size; at inference the full frame is used (scale 1 is inside the training range,
so no centre crop is needed on the robot). Jitter factors are drawn uniformly in
[1 - x, 1 + x] (brightness, contrast, saturation) and [-hue, hue] (hue, in turns).
"""
import dataclasses

import numpy as np
from PIL import Image, ImageEnhance


@dataclasses.dataclass(frozen=True)
class Augment:
    """Ranges of the augmentation (the official code's defaults)."""

    crop_scale: float = 0.95
    brightness: float = 0.3
    contrast: float = 0.4
    saturation: float = 0.5
    hue: float = 0.08

    def __post_init__(self):
        for name in ('brightness', 'contrast', 'saturation'):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f'{name}: {getattr(self, name)} is not in [0, 1)')
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(f'crop_scale: {self.crop_scale} is not in (0, 1]')
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f'hue: {self.hue} is not in [0, 0.5]')

    def draw(self, rng):
        """One set of parameters: (crop box as fractions (x0, y0, side), jitter factors)."""
        side = float(np.sqrt(rng.uniform(self.crop_scale, 1.0)))
        x0, y0 = rng.uniform(0.0, 1.0 - side, 2)
        factors = [rng.uniform(1 - x, 1 + x) for x in
                   (self.brightness, self.contrast, self.saturation)]
        return (float(x0), float(y0), side), (*factors, float(rng.uniform(-self.hue, self.hue)))

    @staticmethod
    def apply(image, params):
        """Apply ``draw``'s parameters to a uint8 (S, S, 3) frame; same size out."""
        (x0, y0, side), (brightness, contrast, saturation, hue) = params
        size = image.shape[0]
        img = Image.fromarray(image)
        box = (x0 * size, y0 * size, (x0 + side) * size, (y0 + side) * size)
        img = img.resize((size, size), Image.BILINEAR, box=box)
        img = ImageEnhance.Brightness(img).enhance(brightness)
        img = ImageEnhance.Contrast(img).enhance(contrast)
        img = ImageEnhance.Color(img).enhance(saturation)
        if hue:
            h, s, v = img.convert('HSV').split()
            shift = int(round(hue * 255))
            h = h.point(lambda p: (p + shift) % 256)
            img = Image.merge('HSV', (h, s, v)).convert('RGB')
        return np.asarray(img)
