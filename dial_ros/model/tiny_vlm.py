"""Tiny Qwen2.5-VL built offline from config objects (no model hub on these machines).

The tiny model is the real transformers ``Qwen2_5_VLForConditionalGeneration`` class with
small sizes, a byte-level tokenizer built with ``tokenizers`` (256 byte symbols plus the
Qwen special tokens) and the Pillow image processor. It goes through exactly the same code
path as a real Qwen2.5-VL checkpoint folder.

Its vision tower is random by default; ``vision_init='effnet_lite0'`` loads the tower
distilled from an ImageNet EfficientNet-Lite0 that ships with the package
(``dial_ros/model/weights``, written by ``dial_ros.model.distill_tower``).
"""
import json
import pathlib

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (PreTrainedTokenizerFast, Qwen2_5_VLConfig,
                          Qwen2_5_VLForConditionalGeneration)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

# Same strings as the real Qwen2.5-VL tokenizer, so one prompt builder serves both scales.
SPECIAL_TOKENS = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<|vision_start|>',
                  '<|vision_end|>', '<|image_pad|>', '<|video_pad|>']


def build_tiny_tokenizer():
    """A byte-level tokenizer: every byte is a token, then the Qwen special tokens."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token='<|endoftext|>',
                                   eos_token='<|im_end|>')


def tiny_vlm_config(tokenizer, hidden_size=64, num_layers=2, num_heads=4, vision_hidden=32,
                    vision_depth=2, attn_implementation='sdpa'):
    """A Qwen2.5-VL config with small sizes; patch 14 and 2x2 merge as the real model."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = hidden_size // num_heads
    # M-RoPE splits head_dim/2 rotary frequencies over (temporal, height, width)
    half = head_dim // 2
    mrope = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=hidden_size,
            intermediate_size=hidden_size * 2, num_hidden_layers=num_layers,
            num_attention_heads=num_heads, num_key_value_heads=max(1, num_heads // 2),
            max_position_embeddings=4096, rms_norm_eps=1e-6,
            rope_parameters={'rope_type': 'default', 'rope_theta': 10000.0,
                             'mrope_section': mrope},
            bos_token_id=ids['<|endoftext|>'], eos_token_id=ids['<|im_end|>'],
            pad_token_id=ids['<|endoftext|>']),
        vision_config=dict(
            depth=vision_depth, hidden_size=vision_hidden, intermediate_size=vision_hidden * 2,
            num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2,
            window_size=112, out_hidden_size=hidden_size,
            fullatt_block_indexes=[vision_depth - 1]),
        image_token_id=ids['<|image_pad|>'], video_token_id=ids['<|video_pad|>'],
        vision_start_token_id=ids['<|vision_start|>'],
        vision_end_token_id=ids['<|vision_end|>'],
        tie_word_embeddings=False,
    )
    config._attn_implementation = attn_implementation
    return config


MERGER_INIT_STD = 0.1
WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / 'weights'
# pretrained vision towers shipped in WEIGHTS_DIR (VLMConfig.tiny_vision_init)
TOWER_FILES = {'effnet_lite0': 'tiny_vit_effnet_lite0.safetensors'}
TOWER_SIZES = {'vision_hidden': 'tiny_vision_hidden', 'vision_depth': 'tiny_vision_depth',
               'out_hidden': 'tiny_hidden'}


def tower_file(name):
    """Path of the shipped vision tower ``name`` (a key of ``TOWER_FILES``)."""
    if name not in TOWER_FILES:
        raise ValueError(f'vision tower {name!r} is not one of {sorted(TOWER_FILES)}')
    path = WEIGHTS_DIR / TOWER_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(f'vision tower {name!r}: {path} is missing from the install')
    return path


def load_tower(model, name, path=None):
    """Load a vision tower into ``model.model.visual``; returns its metadata.

    ``name``: a shipped tower (``TOWER_FILES``); ``path``: a file instead (e.g. a fresh
    ``distill_tower`` export). The tower only fits the sizes it was distilled at (in its
    metadata); another size raises ValueError naming the settings to change.
    """
    from safetensors import safe_open
    path = pathlib.Path(path) if path else tower_file(name)
    with safe_open(str(path), framework='pt') as f:
        meta = dict(f.metadata() or {})
        state = {k: f.get_tensor(k) for k in f.keys()}
    visual = model.model.visual
    have = {'vision_hidden': visual.config.hidden_size, 'vision_depth': visual.config.depth,
            'out_hidden': visual.config.out_hidden_size}
    want = {k: int(meta.get(k, -1)) for k in have}
    if have != want:
        need, got = (', '.join(f'{TOWER_SIZES[k]}={v}' for k, v in sizes.items())
                     for sizes in (want, have))
        raise ValueError(f'tiny_vision_init={name!r}: the tower {path.name} needs {need} '
                         f'(the config has {got})')
    dtype = next(visual.parameters()).dtype
    visual.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
    return meta


def image_processor_for(image_size):
    """Pillow Qwen2-VL image processor that keeps a square ``image_size`` frame as it is."""
    pixels = image_size * image_size
    return Qwen2VLImageProcessorPil(size={'shortest_edge': pixels, 'longest_edge': pixels},
                                    patch_size=14, merge_size=2, temporal_patch_size=2)


def build_tiny_vlm(seed=0, image_size=224, vision_init='random', **sizes):
    """Return (model, tokenizer, image_processor) of a tiny Qwen2.5-VL.

    Everything is drawn at random from ``seed``; ``vision_init`` other than 'random' then
    replaces the vision tower by the shipped one of that name (``load_tower``), so the
    language model's weights are the same for either tower.
    """
    tokenizer = build_tiny_tokenizer()
    config = tiny_vlm_config(tokenizer, **sizes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
        # A pretrained ViT hands the LLM O(1) features; at the Hugging Face init (std 0.02)
        # the random merger's are ~0.03, which would make L_world (plain MSE on them) ~1e-3
        # and leave the foresight bottleneck untrained. Re-draw the merger MLP at std 0.1:
        # tokens come out at unit scale (measured ~0.8-1.1 on sim frames).
        for layer in model.model.visual.merger.mlp:
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.normal_(layer.weight, std=MERGER_INIT_STD)
                torch.nn.init.zeros_(layer.bias)
    if vision_init != 'random':
        load_tower(model, vision_init)
    return model.eval(), tokenizer, image_processor_for(image_size)


def save_tiny_vlm(folder, seed=0, image_size=224, vision_init='random', **sizes):
    """Write a tiny Qwen2.5-VL checkpoint folder, loadable like a downloaded one."""
    folder = pathlib.Path(folder)
    model, tokenizer, processor = build_tiny_vlm(seed, image_size, vision_init, **sizes)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / 'dial_ros_tiny.json').write_text(
        json.dumps({'seed': seed, 'vision_init': vision_init, **sizes}))
    return folder


def qwen25_vl_3b_config(tokenizer=None, attn_implementation='sdpa'):
    """The published Qwen2.5-VL-3B-Instruct architecture (for latency work without weights).

    No VLM weights can be downloaded on these machines; latency and memory depend on the
    architecture, not on the values of the weights.
    """
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
            num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000,
            rms_norm_eps=1e-6, rope_parameters={'rope_type': 'default', 'rope_theta': 1e6,
                                                'mrope_section': [16, 24, 24]},
            bos_token_id=151643, eos_token_id=151645),
        vision_config=dict(
            depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
            spatial_merge_size=2, temporal_patch_size=2, window_size=112, out_hidden_size=2048,
            fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2),
        tie_word_embeddings=True,
    )
    if tokenizer is not None:  # a stand-in tokenizer must map its pads onto the real ids
        config.image_token_id = tokenizer.convert_tokens_to_ids('<|image_pad|>')
        config.vision_start_token_id = tokenizer.convert_tokens_to_ids('<|vision_start|>')
        config.vision_end_token_id = tokenizer.convert_tokens_to_ids('<|vision_end|>')
    config._attn_implementation = attn_implementation
    return config
