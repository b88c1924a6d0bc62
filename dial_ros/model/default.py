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
from dial_ros.model.checkpoint import load_checkpoint, read_checkpoint_config
from dial_ros.model.config import tiny_config
from dial_ros.model.dial import DialModel
from dial_ros.paths import bundled_checkpoint, UNTRAINED

LOG = logging.getLogger(__name__)


def load_model(checkpoint='', embodiment='gr1_sim', seed=0, device='cpu'):
    """Return (model, model_id).

    ``checkpoint``: a folder, '' for the bundled checkpoint (FileNotFoundError naming where
    it looked when missing), or 'untrained' for an untrained tiny model built from ``seed``.
    """
    if checkpoint != UNTRAINED:
        path = pathlib.Path(checkpoint) if checkpoint else bundled_checkpoint()
        read_checkpoint_config(path)  # clear errors for a missing or foreign folder
        digest = hashlib.sha1((path / 'model.safetensors').read_bytes()).hexdigest()[:8]
        LOG.info('loading checkpoint %s', path)
        return load_checkpoint(path, device), f'{path.name}@{digest}'
    LOG.warning('checkpoint %r: using an UNTRAINED tiny model (seed %d); its actions are '
                'meaningless', UNTRAINED, seed)
    torch.manual_seed(seed)
    config = tiny_config(embodiments=[embodiment])
    model = DialModel(config, [load_embodiment(embodiment)]).to(device).eval()
    meta = json.dumps(config.to_dict(), sort_keys=True) + str(seed)
    return model, f'untrained-tiny@{hashlib.sha1(meta.encode()).hexdigest()[:8]}'
