"""Exponential moving average of the trained weights: what a checkpoint deploys.

Diffusion and flow policies are usually deployed with EMA weights (Diffusion Policy, GR00T):
the last iterate of a noisy optimiser lands anywhere in a band around the minimum, and a
closed-loop policy is sensitive to that. The average starts at the current weights when a
stage starts (a stage may add parameters) and warms up its decay, (1 + k) / (10 + k) capped
at ``decay`` after k updates, so early weights do not dominate a short stage.
"""
import contextlib

import torch


class WeightAverage:
    """Shadow copies of the model's parameters, by name."""

    def __init__(self, model, decay):
        self.model, self.decay = model, decay
        self.shadow, self.updates = {}, 0
        self.reset()

    def reset(self):
        """Start over from the model's current weights (at a stage start)."""
        self.shadow = {name: p.detach().clone() for name, p in self.model.named_parameters()}
        self.updates = 0

    def current_decay(self):
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self):
        """Blend the model's weights into the average (after an optimiser step)."""
        decay = self.current_decay()
        # a parameter frozen in this stage does not move, and its copy is fresh from reset()
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                self.shadow[name].lerp_(p.detach(), 1.0 - decay)
        self.updates += 1

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped_in(self):
        """Within the block the model holds the averaged weights; the raw ones come back."""
        params = dict(self.model.named_parameters())
        raw = {name: p.detach().clone() for name, p in params.items()}
        for name, p in params.items():
            p.copy_(self.shadow[name])
        try:
            yield raw
        finally:
            for name, p in params.items():
                p.copy_(raw[name])
