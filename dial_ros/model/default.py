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
from dial_ros.model.checkpoint import CONFIG, load_checkpoint, read_checkpoint_config
from dial_ros.model.config import tiny_config
from dial_ros.model.dial import DialModel

LOG = logging.getLogger(__name__)
BUNDLED = pathlib.Path(__file__).resolve().parent.parent.parent / 'checkpoints' / 'dial_tiny_gr1'


def load_model(checkpoint='', embodiment='gr1_sim', seed=0, device='cpu'):
    """Return (model, model_id). ``checkpoint``: a folder, '' for the default model."""
    path = pathlib.Path(checkpoint) if checkpoint else BUNDLED
    if checkpoint or (path / CONFIG).is_file():
        read_checkpoint_config(path)  # clear errors for a missing or foreign folder
        digest = hashlib.sha1((path / 'model.safetensors').read_bytes()).hexdigest()[:8]
        LOG.info('loading checkpoint %s', path)
        return load_checkpoint(path, device), f'{path.name}@{digest}'
    LOG.warning('no checkpoint given and none bundled: using an UNTRAINED tiny model '
                '(seed %d); its actions are meaningless', seed)
    torch.manual_seed(seed)
    config = tiny_config(embodiments=[embodiment])
    model = DialModel(config, [load_embodiment(embodiment)]).to(device).eval()
    meta = json.dumps(config.to_dict(), sort_keys=True) + str(seed)
    return model, f'untrained-tiny@{hashlib.sha1(meta.encode()).hexdigest()[:8]}'
