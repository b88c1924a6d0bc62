"""Frozen-ViT tokens of every dataset frame, computed once and reused by every run.

The ViT is frozen in all stages, so encoding each frame once (instead of twice per sample
per step: current and future frame) changes nothing but the cost: it takes training at the
tiny scale from ~0.3 s to a few ms of ViT work per step on CPU. The cache lives in
``DATASET/cache/vit_<digest>/episode_XXXXXX.npy`` (float32, frames x N x D); the digest
covers the ViT weights and the input size, so a different model never reads stale tokens.
"""
import hashlib
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


def load_token_cache(dataset, model, batch_size=32):
    """{episode index: (frames, N, D) float32} for ``dataset``, encoding what is missing."""
    folder = dataset.root / 'cache' / f'vit_{vision_digest(model)}'
    folder.mkdir(parents=True, exist_ok=True)
    tokens, encoded, tic = {}, 0, time.monotonic()
    for e in dataset.episodes.values():
        path = folder / f'episode_{e.index:06d}.npy'
        if not path.is_file():
            frames = []
            for start in range(0, e.length, batch_size):
                images = np.stack([dataset.image(e.index, t)
                                   for t in range(start, min(start + batch_size, e.length))])
                with torch.no_grad():
                    frames.append(model.system2.encode_images(images).float().cpu().numpy())
            tmp = path.with_suffix('.tmp.npy')
            np.save(tmp, np.concatenate(frames))
            os.replace(tmp, path)  # a crash never leaves a half-written cache file
            encoded += e.length
        tokens[e.index] = np.load(path, mmap_mode='r')
        if len(tokens[e.index]) != e.length:
            raise ValueError(f'{path}: {len(tokens[e.index])} frames cached, episode has '
                             f'{e.length}; delete the cache folder {folder}')
    if encoded:
        LOG.info('ViT token cache: encoded %d frames in %.1f s into %s', encoded,
                 time.monotonic() - tic, folder)
    return tokens
