"""Frozen-ViT tokens of every dataset frame, computed once and reused by every run.

The ViT is frozen in all stages, so encoding each frame once (instead of twice per sample
per step: current and future frame) changes nothing but the cost: it takes training at the
tiny scale from ~0.3 s to a few ms of ViT work per step on CPU. The cache lives in
``DATASET/cache/vit_<digest>/episode_XXXXXX.npy`` (float32, frames x N x D); the digest
covers the ViT weights and the input size, so a different model never reads stale tokens.

Augmented views (``views > 0``): view ``v`` of an episode applies one set of crop + colour
jitter parameters, drawn from (episode, v), to *every* frame of the episode, so a sample's
current and future frame share their augmentation, as in the official recipe. They live in
``vit_<digest>/aug_<digest of the ranges>/view_<v>/``; training picks a view per sample.
"""
import dataclasses
import hashlib
import json
import logging
import os
import time

import numpy as np
import torch

LOG = logging.getLogger(__name__)


def vision_digest(model):
    """Short hash of the frozen ViT weights and the input image size."""
    h = hashlib.sha1(str(model.config.vlm.image_size).encode())
    for name, tensor in sorted(model.system2.adapter.vision.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def _encode_episode(dataset, model, episode, path, batch_size, transform=None):
    frames = []
    for start in range(0, episode.length, batch_size):
        images = [dataset.image(episode.index, t)
                  for t in range(start, min(start + batch_size, episode.length))]
        if transform is not None:
            images = [transform(image) for image in images]
        with torch.no_grad():
            frames.append(model.system2.encode_images(np.stack(images)).float().cpu().numpy())
    tmp = path.with_suffix('.tmp.npy')
    np.save(tmp, np.concatenate(frames))
    os.replace(tmp, path)  # a crash never leaves a half-written cache file


def _load(folder, dataset, model, batch_size, transform_of=None):
    """{episode: (frames, N, D) memory map}, encoding what ``folder`` lacks."""
    folder.mkdir(parents=True, exist_ok=True)
    tokens, encoded, tic = {}, 0, time.monotonic()
    for e in dataset.episodes.values():
        path = folder / f'episode_{e.index:06d}.npy'
        if not path.is_file():
            transform = None if transform_of is None else transform_of(e.index)
            _encode_episode(dataset, model, e, path, batch_size, transform)
            encoded += e.length
        tokens[e.index] = np.load(path, mmap_mode='r')
        if len(tokens[e.index]) != e.length:
            raise ValueError(f'{path}: {len(tokens[e.index])} frames cached, episode has '
                             f'{e.length}; delete the cache folder {folder}')
    if encoded:
        LOG.info('ViT token cache: encoded %d frames in %.1f s into %s', encoded,
                 time.monotonic() - tic, folder)
    return tokens


def load_token_cache(dataset, model, batch_size=32, views=0, augment=None):
    """Tokens for ``dataset``, encoding what is missing.

    ``views == 0``: {episode index: (frames, N, D) float32}. Otherwise {episode index:
    [view 0, ..., view ``views`` - 1]} of augmented frames (``augment``: an
    ``augment.Augment``).
    """
    root = dataset.root / 'cache' / f'vit_{vision_digest(model)}'
    if not views:
        return _load(root, dataset, model, batch_size)
    ranges = json.dumps(dataclasses.asdict(augment), sort_keys=True)
    aug_root = root / f'aug_{hashlib.sha1(ranges.encode()).hexdigest()[:8]}'
    per_view = []
    for view in range(views):
        def transform_of(episode, view=view):
            params = augment.draw(np.random.default_rng([episode, view, 20261129]))
            return lambda image: augment.apply(image, params)
        per_view.append(_load(aug_root / f'view_{view}', dataset, model, batch_size,
                              transform_of))
    return {e: [v[e] for v in per_view] for e in per_view[0]}


def token_stats(tokens, max_frames=20000, seed=0):
    """(mean map (N, D), scale) of cached tokens ({episode: array or [views]}): the mean per
    position and channel and the rms of the centred tokens, over up to ``max_frames``."""
    arrays = [v[0] if isinstance(v, list) else v for v in tokens.values()]
    index = [(a, t) for a in range(len(arrays)) for t in range(len(arrays[a]))]
    rng = np.random.default_rng(seed)
    if len(index) > max_frames:
        index = [index[i] for i in rng.choice(len(index), max_frames, replace=False)]
    frames = np.stack([np.asarray(arrays[a][t], np.float64) for a, t in index])
    mean = frames.mean(0)
    return mean.astype(np.float32), float(np.sqrt(np.mean((frames - mean) ** 2)))


def _encode_shard(dataset_path, checkpoint, shard, shards, batch_size):
    """Encode the un-cached episodes ``index % shards == shard`` (one worker process)."""
    torch.set_num_threads(1)
    from dial_ros.data.dataset import DialDataset
    from dial_ros.model.checkpoint import load_checkpoint
    model = load_checkpoint(checkpoint).eval()
    dataset = DialDataset(dataset_path, image_size=model.config.vlm.image_size)
    folder = dataset.root / 'cache' / f'vit_{vision_digest(model)}'
    folder.mkdir(parents=True, exist_ok=True)
    done = 0
    for e in dataset.episodes.values():
        path = folder / f'episode_{e.index:06d}.npy'
        if e.index % shards == shard and not path.is_file():
            _encode_episode(dataset, model, e, path, batch_size)
            done += 1
    return done


def main(argv=None):
    """Fill a dataset's (plain, not augmented) token cache with several processes.

    Training encodes what is missing on one core; on a large dataset this does it first
    with ``--workers`` processes. Any checkpoint with the same frozen ViT gives the same
    cache folder (its name is the ViT's digest), e.g. the bundled one.
    """
    import argparse
    import concurrent.futures
    import multiprocessing
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s')
    p = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    p.add_argument('--dataset', required=True, help='LeRobot-layout dataset folder')
    p.add_argument('--checkpoint', required=True, help='a checkpoint with the frozen ViT')
    p.add_argument('--workers', type=int, default=2, help='encoding processes')
    p.add_argument('--batch-size', type=int, default=32, help='frames per ViT call')
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error(f'--workers must be >= 1, got {args.workers}')
    tic = time.monotonic()
    ctx = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=ctx) as pool:
        jobs = [pool.submit(_encode_shard, args.dataset, args.checkpoint, k, args.workers,
                            args.batch_size) for k in range(args.workers)]
        encoded = sum(job.result() for job in jobs)
    LOG.info('encoded %d episodes in %.1f s', encoded, time.monotonic() - tic)
    return 0


if __name__ == '__main__':
    import sys
    sys.exit(main())
