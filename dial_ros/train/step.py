"""One training step, shared by the trainer, the tests and the benchmarks."""
import math

import torch

from dial_ros.model.dial import RECIPE_STAGES


def build_optimizer(model, lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-5):
    """AdamW over every parameter some stage trains (the reference's defaults).

    The ViT and the text embedding table are never in it, so weight decay cannot touch
    them; parameters frozen in the current stage have no gradient and are skipped.
    """
    return torch.optim.AdamW(trainable_in_any_stage(model), lr=lr, betas=betas,
                             weight_decay=weight_decay)


def trainable_in_any_stage(model):
    frozen = {id(p) for p in model.system2.adapter.vision.parameters()}
    frozen.add(id(model.system2.adapter.embed_tokens.weight))
    head = getattr(model.system2.adapter.hf, 'lm_head', None)
    if head is not None:
        frozen.add(id(head.weight))
    return [p for p in model.parameters() if id(p) not in frozen]


def sync_optimizer(model, optimizer):
    """Add parameters created by a stage switch (APT stage 2 inserts layers)."""
    known = {id(p) for group in optimizer.param_groups for p in group['params']}
    new = [p for p in trainable_in_any_stage(model) if id(p) not in known]
    if new:
        optimizer.add_param_group({'params': new})
    return len(new)


def stage_at(step, total_steps, recipe='dial', first_stage_fraction=0.5):
    """The stage for a global step: the first stage for the first fraction of the steps."""
    first, second = RECIPE_STAGES[recipe]
    return first if step < math.ceil(total_steps * first_stage_fraction) else second


def train_step(model, batch, optimizer, max_grad_norm=1.0, scheduler=None):
    """Forward, backward, clip, step. Returns float metrics (and the gradient norm)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss, metrics = model.compute_loss(batch)
    if not torch.isfinite(loss):
        raise ValueError(f'loss: not finite ({loss.item()}) at stage {model.stage}')
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    out = {k: float(v) for k, v in metrics.items()}
    out['grad_norm'] = float(grad_norm)
    return out
