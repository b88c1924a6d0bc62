"""Checkpoints: a folder with model.safetensors, dial_config.yaml and the VLM's config.

No pickle anywhere: weights as safetensors, configuration as YAML (``yaml.safe_load``), the
VLM's own config/tokenizer/processor as the JSON files transformers writes. Loading builds
the architecture offline from those files and then loads the weights strictly.
"""
import pathlib

import torch
import yaml
from safetensors.torch import load_model, save_model

from dial_ros.embodiment import EmbodimentSpec
from dial_ros.model import parts
from dial_ros.model.config import ModelConfig
from dial_ros.model.dial import DialModel
from dial_ros.model.system2 import Qwen25VLAdapter

FORMAT = 'dial_ros/checkpoint-v1'
WEIGHTS = 'model.safetensors'
CONFIG = 'dial_config.yaml'
VLM_DIR = 'vlm'


def save_checkpoint(model, path, extra=None):
    """Write ``model`` to the folder ``path`` (created); ``extra`` goes into the YAML."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {
        'format': FORMAT,
        'stage': model.stage,
        'model': model.config.to_dict(),
        'embodiments': [e.to_dict() for e in model.embodiments.values()],
        'extra': extra or {},
    }
    model.system2.adapter.save_folder(path / VLM_DIR)
    save_model(model, str(path / WEIGHTS), metadata={'format': FORMAT})
    with open(path / CONFIG, 'w') as f:
        yaml.safe_dump(meta, f, sort_keys=False)
    return path


def read_checkpoint_config(path):
    """The checkpoint's YAML as a dict; clear errors for a missing or foreign folder."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f'checkpoint not found: {path} is not a folder')
    for name in (CONFIG, WEIGHTS, VLM_DIR):
        if not (path / name).exists():
            raise FileNotFoundError(f'checkpoint {path} is incomplete: {name} is missing')
    with open(path / CONFIG) as f:
        meta = yaml.safe_load(f)
    if not isinstance(meta, dict) or meta.get('format') != FORMAT:
        raise ValueError(f'checkpoint {path}: {CONFIG} is not a {FORMAT} file')
    return meta


def build_skeleton(path, meta):
    """The architecture of the checkpoint at ``path`` (YAML ``meta``), random weights."""
    config = ModelConfig.from_dict(meta['model'])
    embodiments = [EmbodimentSpec.from_dict(e) for e in meta['embodiments']]
    adapter = Qwen25VLAdapter.from_folder(path / VLM_DIR, config.vlm.image_size,
                                          getattr(torch, config.vlm.dtype), weights=False)
    model = DialModel(config, embodiments, adapter=adapter)
    if meta['stage'] != model.stage:
        model.set_stage(meta['stage'])
    return model


def load_checkpoint(path, device='cpu', part=None):
    """Rebuild the model from ``path`` and load its weights; outputs are bit-identical.

    ``part`` (one of ``parts.PARTS``): only that part of the model, built with its
    parameters on the meta device and only its tensors read from the file (the others are
    never materialised); see ``dial_ros.model.parts``.
    """
    path = pathlib.Path(path)
    meta = read_checkpoint_config(path)
    if part is not None:
        parts.check_part(part)
        with parts.parameters_on_meta():
            model = build_skeleton(path, meta)
        return parts.load_part_weights(model, part, path / WEIGHTS, device)
    model = build_skeleton(path, meta)
    try:
        load_model(model, str(path / WEIGHTS), strict=True)
    except RuntimeError as err:
        raise ValueError(f'checkpoint {path} does not match its configuration: '
                         f'{str(err)[:2000]}') from None
    return model.to(device).eval()
