"""One part of a DIAL model per process: each ROS node holds only what it runs.

- ``vision`` (perception): the frozen ViT with its patch merger.
- ``system2`` (intent): the language model with its text embeddings, the foresight queries,
  the head(s) and the token normaliser; no ViT (perception sends the tokens) and no LM head
  (System-2 reads hidden states, never logits).
- ``system1`` (controller): the fusion transformer, the DiT, the embodiment encoders and
  decoders, and the token normaliser (System-1 reads centred tokens too).

A part is a ``DialModel`` whose other submodules are removed (set to None), so a part runs
exactly the code, and gives exactly the numbers, of the whole model. From a checkpoint the
architecture is built with its parameters on the meta device (no memory), pruned, and only
the part's tensors are read from ``model.safetensors`` (``safe_open`` reads only the keys
asked for): the other parts are never materialised.
"""
import collections
import contextlib

import torch
from safetensors import safe_open
from torch import nn

VIT = 'system2.adapter.hf.model.visual.'
LM_HEAD = 'system2.adapter.hf.lm_head.'
PARTS = {
    'vision': 'the frozen ViT (perception)',
    'system2': 'System-2: language model, foresight queries, head(s) (intent)',
    'system1': 'System-1: fusion transformer, DiT, embodiment heads (controller)',
}


def check_part(part):
    if part not in PARTS:
        raise ValueError(f'part: {part!r} is not one of {sorted(PARTS)} (None: the whole model)')
    return part


def prune(model, part):
    """Remove every submodule of ``model`` that ``part`` does not run; returns ``model``."""
    check_part(part)
    if part == 'system1':
        model.system2 = None
    else:
        model.system1 = None
        s2 = model.system2
        hf = s2.adapter.hf
        hf.lm_head = None
        if part == 'vision':
            hf.model.language_model = None
            s2.queries = s2.head = s2.world_head = None
            model.token_norm = None  # perception publishes the raw tokens
        else:
            hf.model.visual = None
    model.part = part
    return model


@contextlib.contextmanager
def parameters_on_meta():
    """Parameters registered inside go to the meta device (no memory); buffers stay real.

    Buffers are small and some are not saved with the weights (rotary frequencies, the
    image grid), so they are computed as usual; accelerate's
    ``init_empty_weights(include_buffers=False)`` does the same.
    """
    original = nn.Module.register_parameter

    def register(module, name, param):
        original(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = type(param)(param.to('meta'),
                                                   requires_grad=param.requires_grad)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def _aliases(model):
    """name -> the other names of the same (tied) parameter.

    safetensors keeps one name of tied tensors (e.g. ``lm_head.weight`` for Qwen2.5-VL-3B's
    tied embeddings), which may be a name of a part that is pruned away.
    """
    names = collections.defaultdict(list)
    for name, param in model.named_parameters(remove_duplicate=False):
        names[id(param)].append(name)
    return {n: [m for m in group if m != n] for group in names.values() for n in group}


def _materialise(model, device):
    """Allocate the meta parameters left in ``model`` on ``device`` (ties kept)."""
    done = {}
    for module in model.modules():
        for name, param in list(module._parameters.items()):
            if param is not None and param.is_meta:
                if id(param) not in done:
                    done[id(param)] = type(param)(torch.empty_like(param, device=device),
                                                  requires_grad=param.requires_grad)
                module._parameters[name] = done[id(param)]


def _belongs(key, part):
    """Whether a key of the whole model's file is a tensor of ``part``."""
    if part == 'vision':
        return key.startswith(VIT)
    top = ('system1.', 'token_norm.') if part == 'system1' else ('system2.', 'token_norm.')
    return key.startswith(top) and not key.startswith((VIT, LM_HEAD))


def load_part_weights(model, part, weights, device='cpu'):
    """Prune the (meta) skeleton ``model`` to ``part`` and read its tensors from ``weights``.

    Tensors are copied one at a time into freshly allocated parameters (as the whole-model
    load does), so the peak is the part plus one tensor and the numbers are bit-identical.
    """
    aliases = _aliases(model)
    prune(model, part)
    _materialise(model, device)
    wanted = model.state_dict(keep_vars=True)
    where = f'checkpoint {weights.parent} ({part} part)'
    with safe_open(str(weights), framework='pt') as f:
        have = set(f.keys())
        source = {}
        for name in wanted:
            found = [n for n in [name] + aliases.get(name, []) if n in have]
            if found:
                source[name] = found[0]
        missing = [n for n in wanted if n not in source]
        if missing:
            raise ValueError(f'checkpoint {weights.parent}: the {part} part needs '
                             f'{len(missing)} tensors that {weights.name} lacks, e.g. '
                             f'{", ".join(missing[:5])}')
        used = set(source.values())
        unexpected = sorted(k for k in have if _belongs(k, part) and k not in used)
        if unexpected:
            raise ValueError(f'{where} does not match its configuration: unexpected '
                             f'tensors {unexpected[:5]}')
        with torch.no_grad():
            for name, target in wanted.items():
                tensor = f.get_tensor(source[name])
                if tensor.shape != target.shape:
                    raise ValueError(f'{where} does not match its configuration: {name} has '
                                     f'shape {tuple(tensor.shape)} in the file, '
                                     f'{tuple(target.shape)} in the model')
                target.copy_(tensor)
    return model.to(device).eval()
