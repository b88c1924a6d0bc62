"""The model the nodes run when no checkpoint is given.

The bundled checkpoint (trained on demos from the embedded sim) when the package ships one;
otherwise an untrained tiny model built deterministically from a seed, so that separate
processes (perception, intent, controller) build bit-identical weights without sharing a
file. The model id tells consumers which one produced a tensor.
"""
import hashlib
import json
import logging
import pathlib

import torch

from dial_ros.embodiment import load_embodiment
from dial_ros.model.checkpoint import (CONFIG, WEIGHTS, load_checkpoint,
                                       read_checkpoint_config)
from dial_ros.model.config import tiny_config
from dial_ros.model.dial import DialModel
from dial_ros.model.parts import check_part, prune

LOG = logging.getLogger(__name__)
BUNDLED = pathlib.Path(__file__).resolve().parent.parent.parent / 'checkpoints' / 'dial_tiny_gr1'


def file_digest(path, chunk=1 << 24):
    """sha1 of a file, read in chunks (a paper-scale checkpoint is ~9 GB)."""
    digest = hashlib.sha1()
    with open(path, 'rb') as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_model(checkpoint='', embodiment='gr1_sim', seed=0, device='cpu', part=None):
    """Return (model, model_id). ``checkpoint``: a folder, '' for the default model.

    ``part`` (see ``dial_ros.model.parts``): only that part of the model; every part of one
    checkpoint reports the model id of the whole.
    """
    if part is not None:
        check_part(part)
    path = pathlib.Path(checkpoint) if checkpoint else BUNDLED
    if checkpoint or (path / CONFIG).is_file():
        read_checkpoint_config(path)  # clear errors for a missing or foreign folder
        digest = file_digest(path / WEIGHTS)[:8]
        LOG.info('loading checkpoint %s%s', path, f' ({part} part)' if part else '')
        return load_checkpoint(path, device, part), f'{path.name}@{digest}'
    LOG.warning('no checkpoint given and none bundled: using an UNTRAINED tiny model '
                '(seed %d); its actions are meaningless', seed)
    torch.manual_seed(seed)
    config = tiny_config(embodiments=[embodiment])
    # the whole model is built in every process so that each part draws the same numbers
    model = DialModel(config, [load_embodiment(embodiment)])
    if part is not None:
        prune(model, part)
    meta = json.dumps(config.to_dict(), sort_keys=True) + str(seed)
    return model.to(device).eval(), f'untrained-tiny@{hashlib.sha1(meta.encode()).hexdigest()[:8]}'
