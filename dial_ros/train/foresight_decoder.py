"""Train the foresight image decoder (``dial_ros.model.foresight_decoder``) and measure it.

    OMP_NUM_THREADS=1 python -m dial_ros.train.foresight_decoder --dataset work/lift/dataset \
        --episodes 200 --val-dataset work/val_clean40 --checkpoint checkpoints/dial_tiny_gr1

Training pairs are recorded frames and their frozen-ViT tokens, computed as perception
computes them: the checkpoint's own ViT on the dataset's decoded frames (the dataset's token
cache, ``DATASET/cache/vit_<digest>/``, is read when present and filled when not). Every
``--frame-stride``-th frame is held in memory at the decoder's size (6557 frames of the
200 lift demos: 250 MB). One core: 8.5 min in all with the defaults, 7 of them training
(``--max-minutes`` caps it; the learning rate's cosine follows the time too).

Then, on held-out episodes (``--val-dataset``, encoded in memory, nothing written there):
- PSNR of decoding the ground-truth tokens of a frame against that frame, next to the
  mean-image baseline (the training frames' mean);
- open loop, PSNR of decoding System-2's foresight from frame t against the frame that
  actually came ``foresight_horizon`` steps later, next to decoding frame t's own tokens
  ("nothing moves") and decoding the true tokens of frame t + H (the decoder's ceiling).

The weights and a JSON file with the config, provenance and these metrics go to ``--out``
(default: the checkpoint folder, where the foresight panel node looks for them).
"""
import argparse
import logging
import pathlib
import sys
import time

import numpy as np
import torch

from dial_ros.model import foresight_decoder as fd

LOG = logging.getLogger(__name__)


def _frames(dataset, index, size):
    """uint8 (n, size, size, 3) frames of ``index`` = [(episode, t), ...]."""
    return np.stack([fd.resize(dataset.image(e, t), size) for e, t in index])


def _encode(model, dataset, index, batch=32):
    """Frozen-ViT tokens (n, N, D) of ``index``'s frames, as perception computes them."""
    out = []
    for k in range(0, len(index), batch):
        images = np.stack([dataset.image(e, t) for e, t in index[k:k + batch]])
        with torch.inference_mode():
            out.append(model.system2.encode_images(images).float().cpu().numpy())
    return np.concatenate(out)


def training_set(dataset, model, stride, size):
    """(tokens (n, N, D) float32, frames (n, S, S, 3) uint8) of every stride-th frame."""
    from dial_ros.data.token_cache import load_token_cache
    cache = load_token_cache(dataset, model)
    index = [(e.index, t) for e in dataset.episodes.values() for t in range(0, e.length, stride)]
    tokens = np.stack([np.asarray(cache[e][t], np.float32) for e, t in index])
    return tokens, _frames(dataset, index, size)


def train(decoder, tokens, frames, steps, batch_size, lr, max_seconds, seed=0):
    """Adam on the pixel MSE (= maximising PSNR); returns the steps run.

    The learning rate warms up, then follows a cosine over the progress, the larger of
    steps done / ``steps`` and time spent / ``max_seconds``: a run cut short by the time
    cap still ends at a low rate.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    x_all, tic, loss_avg = torch.from_numpy(tokens), time.monotonic(), None
    decoder.train()
    for step in range(steps):
        progress = max(step / steps, (time.monotonic() - tic) / max_seconds)
        if progress >= 1.0:
            LOG.warning('stopped at step %d of %d: --max-minutes reached', step, steps)
            break
        for group in opt.param_groups:
            group['lr'] = lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + np.cos(np.pi * progress))
        pick = torch.randint(len(tokens), (batch_size,), generator=gen)
        target = torch.from_numpy(frames[pick.numpy()]).permute(0, 3, 1, 2).float() / 255.0
        loss = torch.nn.functional.mse_loss(decoder(x_all[pick]), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
        if step % 100 == 0 or step == steps - 1:
            LOG.info('step %d/%d: mse %.5f (%.1f dB), %.0f s', step, steps, loss_avg,
                     10 * np.log10(1 / max(loss_avg, 1e-12)), time.monotonic() - tic)
    decoder.eval()
    return step + 1 if progress < 1.0 else step


def _mean_psnr(a, b):
    return round(float(np.mean([fd.psnr(x, y) for x, y in zip(a, b)])), 2)


def evaluate(decoder, vision, val, mean_image, stride, checkpoint, with_foresight=True):
    """Held-out PSNRs (dB, mean over frames); see the module docstring.

    Every frame is decoded and encoded once: with ``stride`` dividing the horizon the later
    frames of the foresight pairs are frames of the grid already.
    """
    grid = [(e.index, t) for e in val.episodes.values() for t in range(0, e.length, stride)]
    policy, h, pairs = None, 0, []
    if with_foresight:
        from dial_ros.model.policy import DialPolicy
        policy = DialPolicy.from_checkpoint(checkpoint, part='system2')
        h = policy.model.config.foresight_horizon
        pairs = [(e, t) for e, t in grid if t + h < val.episodes[e].length]
    later_keys = [(e, t + h) for e, t in pairs]
    keys = sorted(set(grid + later_keys))
    frames = dict(zip(keys, _frames(val, keys, decoder.config.image_size)))
    tokens = dict(zip(keys, _encode(vision, val, keys)))

    def stack(table, index):
        return np.stack([table[k] for k in index])
    truth = stack(frames, grid)
    out = {'held_out_frames': len(grid), 'held_out_episodes': len(val.episodes),
           'psnr_decoded_tokens_db': _mean_psnr(decoder.decode(stack(tokens, grid)), truth),
           'psnr_mean_image_db': _mean_psnr(np.broadcast_to(mean_image, truth.shape), truth)}
    if not with_foresight:
        return out
    task = {e.index: val.tasks[int(val.task_index[e.start])] for e in val.episodes.values()}
    intents = np.stack([policy.foresee(tokens[k], task[k[0]]) for k in pairs])
    later, later_tokens = stack(frames, later_keys), stack(tokens, later_keys)
    out.update({
        'foresight_horizon_steps': h, 'foresight_pairs': len(pairs),
        'psnr_foresight_vs_later_db': _mean_psnr(decoder.decode(intents), later),
        'psnr_decoded_now_vs_later_db': _mean_psnr(decoder.decode(stack(tokens, pairs)),
                                                   later),
        'psnr_frame_now_vs_later_db': _mean_psnr(stack(frames, pairs), later),
        'psnr_decoded_true_later_vs_later_db': _mean_psnr(decoder.decode(later_tokens), later),
        'token_mse_foresight_vs_later': round(float(np.mean((intents - later_tokens) ** 2)), 5),
    })
    return out


def main(argv=None):
    """Train the foresight decoder on a dataset's frames and tokens; report held-out PSNR."""
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument('--dataset', required=True, help='LeRobot-layout dataset (training frames)')
    p.add_argument('--checkpoint', required=True, help='DIAL checkpoint whose frozen ViT '
                   'makes the tokens (and whose System-2 makes the foresight)')
    p.add_argument('--val-dataset', help='held-out episodes for the metrics (none: skipped)')
    p.add_argument('--out', help='folder for the decoder files (default: the checkpoint)')
    p.add_argument('--episodes', type=int, default=0, help='train on the first N episodes '
                   '(0: all)')
    p.add_argument('--image-size', type=int, default=112, help='decoded side, px')
    p.add_argument('--frame-stride', type=int, default=4, help='train on every k-th frame')
    p.add_argument('--val-stride', type=int, default=8, help='evaluate every k-th frame')
    p.add_argument('--steps', type=int, default=3000)
    p.add_argument('--batch-size', type=int, default=16)
    p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--max-minutes', type=float, default=7.0, help='stop training after this')
    p.add_argument('--no-foresight', action='store_true', help='skip the System-2 metrics')
    args = p.parse_args(argv)
    for name in ('frame_stride', 'val_stride', 'steps', 'batch_size'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    torch.manual_seed(0)
    from dial_ros.data.dataset import DialDataset
    from dial_ros.data.token_cache import vision_digest
    from dial_ros.model.checkpoint import load_checkpoint
    from dial_ros.train.trainer import first_episodes
    vision = load_checkpoint(args.checkpoint, part='vision').eval()
    size = vision.config.vlm.image_size
    dataset = DialDataset(args.dataset, image_size=size,
                          episodes=first_episodes(args.dataset, args.episodes))
    tic = time.monotonic()
    tokens, frames = training_set(dataset, vision, args.frame_stride, args.image_size)
    LOG.info('%d training frames (%d episodes) in %.0f s', len(frames), len(dataset.episodes),
             time.monotonic() - tic)
    decoder = fd.ForesightDecoder(fd.DecoderConfig(num_tokens=tokens.shape[1],
                                                   token_dim=tokens.shape[2],
                                                   image_size=args.image_size))
    mean = tokens.mean(0)
    decoder.set_token_stats(mean, np.sqrt(np.mean((tokens - mean) ** 2)))
    mean_image = frames.mean(0).round().astype(np.uint8)
    decoder.set_mean_image(mean_image)
    tic = time.monotonic()
    steps = train(decoder, tokens, frames, args.steps, args.batch_size, args.lr,
                  args.max_minutes * 60)
    provenance = {'checkpoint': pathlib.Path(args.checkpoint).name,
                  'vision_digest': vision_digest(vision), 'dataset': str(args.dataset),
                  'episodes': len(dataset.episodes),
                  'training_frames': len(frames), 'steps': steps,
                  'batch_size': args.batch_size, 'train_seconds': round(time.monotonic() - tic)}
    if args.val_dataset:
        val = DialDataset(args.val_dataset, image_size=size)
        provenance['metrics'] = evaluate(decoder, vision, val, mean_image, args.val_stride,
                                         args.checkpoint, not args.no_foresight)
        provenance['val_dataset'] = str(args.val_dataset)
        LOG.info('held-out: %s', provenance['metrics'])
    path = fd.save_decoder(decoder, args.out or args.checkpoint, **provenance)
    LOG.info('decoder written to %s (%d kB)', path, path.stat().st_size // 1024)
    return 0


if __name__ == '__main__':
    sys.exit(main())
