"""The model the nodes run: a checkpoint folder, the bundled one, or an untrained one.

No checkpoint ('') means the bundled checkpoint (trained on demos from the embedded sim),
found through dial_ros.paths; a missing one is an error, never a silent fallback. An
untrained tiny model only when asked for by name (``checkpoint='untrained'``): it is built
deterministically from a seed, so that separate processes (perception, intent, controller)
build bit-identical weights without sharing a file. The model id tells consumers which one
produced a tensor.
"""
import hashlib
import json
import logging
import pathlib

import torch

from dial_ros.embodiment import load_embodiment
from dial_ros.model.checkpoint import WEIGHTS, load_checkpoint, read_checkpoint_config
from dial_ros.model.config import tiny_config
from dial_ros.model.dial import DialModel
from dial_ros.model.parts import check_part, prune
from dial_ros.paths import bundled_checkpoint, UNTRAINED

LOG = logging.getLogger(__name__)


def file_digest(path, chunk=1 << 24):
    """sha1 of a file, read in chunks (a paper-scale checkpoint is ~9 GB)."""
    digest = hashlib.sha1()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_model(checkpoint='', embodiment='gr1_sim', seed=0, device='cpu', part=None):
    """Return (model, model_id).

    ``checkpoint``: a folder, '' for the bundled checkpoint (FileNotFoundError naming where
    it looked when missing), or 'untrained' for an untrained tiny model built from ``seed``.
    ``part`` (see ``dial_ros.model.parts``): only that part of the model; every part of one
    checkpoint reports the model id of the whole.
    """
    if part is not None:
        check_part(part)
    if checkpoint != UNTRAINED:
        path = pathlib.Path(checkpoint) if checkpoint else bundled_checkpoint()
        read_checkpoint_config(path)  # clear errors for a missing or foreign folder
        digest = file_digest(path / WEIGHTS)[:8]
        LOG.info('loading checkpoint %s%s', path, f' ({part} part)' if part else '')
        return load_checkpoint(path, device, part), f'{path.name}@{digest}'
    LOG.warning('checkpoint %r: using an UNTRAINED tiny model (seed %d); its actions are '
                'meaningless', UNTRAINED, seed)
    torch.manual_seed(seed)
    config = tiny_config(embodiments=[embodiment])
    # the whole model is built in every process so that each part draws the same numbers
    model = DialModel(config, [load_embodiment(embodiment)])
    if part is not None:
        prune(model, part)
    meta = json.dumps(config.to_dict(), sort_keys=True) + str(seed)
    return model.to(device).eval(), f'untrained-tiny@{hashlib.sha1(meta.encode()).hexdigest()[:8]}'
