"""System-2: a VLM that predicts the future ViT tokens of the scene (the latent intent).

``VLMAdapter`` is the seam between DIAL and one transformers model family; it exposes the
frozen vision tower (with its patch merger), the text embedding table, the 3-D rotary
positions and the language model. Qwen2.5-VL is the first family; another image-text-to-text
class with a vision tower needs one more adapter with the same methods.
"""
import functools
import logging

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from dial_ros.model import tiny_vlm

LOG = logging.getLogger(__name__)


class Qwen25VLAdapter(nn.Module):
    """Qwen2.5-VL: ViT + 2x2 patch merger -> (N, D) tokens; M-RoPE language model."""

    def __init__(self, hf_model, tokenizer, image_processor, image_size):
        super().__init__()
        self.hf = hf_model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.image_size = image_size
        cfg = hf_model.config
        self.hidden_size = cfg.text_config.hidden_size
        self.num_layers = cfg.text_config.num_hidden_layers
        self.image_token_id = cfg.image_token_id
        self.pad_token_id = tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = tokenizer.convert_tokens_to_ids('<|endoftext|>')
        self.num_image_tokens = (image_size // 28) ** 2
        side = image_size // 14
        self.register_buffer('grid_thw', torch.tensor([[1, side, side]]), persistent=False)

    # --- vision --------------------------------------------------------------------------
    @property
    def vision(self):
        return self.hf.model.visual

    @property
    def embed_tokens(self):
        return self.hf.model.language_model.embed_tokens

    @property
    def language_model(self):
        return self.hf.model.language_model

    def pixel_inputs(self, images):
        """uint8 (B, S, S, 3) frames -> flattened patches for the ViT (Pillow processor)."""
        out = self.image_processor(images=list(images), return_tensors='pt')
        return out['pixel_values'], out['image_grid_thw']

    def encode_images(self, images):
        """uint8 (B, S, S, 3) -> ViT tokens (B, N, D) after the patch merger."""
        pixels, grid = self.pixel_inputs(images)
        param = next(self.vision.parameters())
        merged = self.vision(pixels.to(param.device, param.dtype),
                             grid_thw=grid.to(param.device)).pooler_output
        return merged.view(len(images), self.num_image_tokens, -1)

    # --- prompt --------------------------------------------------------------------------
    @functools.lru_cache(maxsize=256)
    def _instruction_ids(self, instruction):
        return tuple(self.tokenizer(instruction, add_special_tokens=False)['input_ids'])

    @functools.cached_property
    def _template_ids(self):
        encode = functools.partial(self.tokenizer.encode, add_special_tokens=False)
        prefix = encode('<|im_start|>user\n<|vision_start|>')
        middle = encode('<|vision_end|>')
        suffix = encode('<|im_end|>\n<|im_start|>assistant\n')
        return prefix, middle, suffix

    def prompt(self, instructions, num_queries):
        """Token layout: [pad.. | user, vision_start, image x N, vision_end, instruction,
        im_end, assistant | queries x num_queries], left padded so queries are the last tokens.

        Returns input_ids, attention_mask, image_mask, language_mask (all (B, L)).
        """
        prefix, middle, suffix = self._template_ids
        rows, lang = [], []
        for text in instructions:
            words = list(self._instruction_ids(text))
            row = (prefix + [self.image_token_id] * self.num_image_tokens + middle + words
                   + suffix + [self.pad_token_id] * num_queries)
            start = len(prefix) + self.num_image_tokens + len(middle)
            rows.append(row)
            lang.append((start, start + len(words)))
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(ids)
        language = torch.zeros_like(ids, dtype=torch.bool)
        for b, (row, (start, end)) in enumerate(zip(rows, lang)):
            pad = length - len(row)
            ids[b, pad:] = torch.tensor(row)
            attention[b, pad:] = 1
            language[b, pad + start:pad + end] = True
        return ids, attention, ids == self.image_token_id, language

    def positions(self, input_ids, image_mask, attention_mask):
        """3-D rotary positions from the model's own rule (masked tokens take no position)."""
        grid = self.grid_thw.expand(input_ids.shape[0], 3)
        pos, _ = self.hf.model.get_rope_index(input_ids, image_mask.int(), image_grid_thw=grid,
                                              attention_mask=attention_mask)
        return pos

    def run_language_model(self, embeds, attention_mask, position_ids, hidden_layers=()):
        """Returns the final hidden states and the requested intermediate layers."""
        out = self.language_model(inputs_embeds=embeds, attention_mask=attention_mask,
                                  position_ids=position_ids, use_cache=False,
                                  output_hidden_states=bool(hidden_layers))
        layers = [out.hidden_states[i] for i in hidden_layers] if hidden_layers else []
        return out.last_hidden_state, layers

    def freeze_vision_and_embeddings(self):
        """The ViT and every text embedding row stay frozen in all stages."""
        for p in self.vision.parameters():
            p.requires_grad_(False)
        self.embed_tokens.weight.requires_grad_(False)
        if getattr(self.hf, 'lm_head', None) is not None:
            self.hf.lm_head.weight.requires_grad_(False)

    @classmethod
    def build(cls, vlm_cfg):
        """Tiny: from config objects. Paper: from the local checkpoint folder ``vlm_cfg.path``."""
        dtype = getattr(torch, vlm_cfg.dtype)
        if vlm_cfg.scale == 'tiny' and not vlm_cfg.path:
            model, tokenizer, processor = tiny_vlm.build_tiny_vlm(
                seed=vlm_cfg.seed, image_size=vlm_cfg.image_size,
                hidden_size=vlm_cfg.tiny_hidden, num_layers=vlm_cfg.tiny_layers,
                num_heads=vlm_cfg.tiny_heads, vision_hidden=vlm_cfg.tiny_vision_hidden,
                vision_depth=vlm_cfg.tiny_vision_depth, vision_init=vlm_cfg.tiny_vision_init)
            return cls(model.to(dtype), tokenizer, processor, vlm_cfg.image_size)
        return cls.from_folder(vlm_cfg.path, vlm_cfg.image_size, dtype)

    @classmethod
    def from_folder(cls, path, image_size, dtype, weights=True):
        """Load a Qwen2.5-VL checkpoint folder offline (``weights=False``: config only)."""
        import pathlib
        folder = pathlib.Path(path)
        if not (folder / 'config.json').is_file():
            raise FileNotFoundError(f'VLM checkpoint folder {folder} has no config.json')
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        processor = tiny_vlm.image_processor_for(image_size)
        if weights:
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                folder, dtype=dtype, local_files_only=True)
        else:
            from transformers import AutoConfig
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            model = Qwen2_5_VLForConditionalGeneration(config).to(dtype)
        LOG.info('loaded %s from %s', type(model).__name__, folder)
        return cls(model.eval(), tokenizer, processor, image_size)

    def save_folder(self, path):
        """Config, tokenizer and processor (weights travel in the DIAL checkpoint)."""
        self.hf.config.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        if isinstance(self.image_processor, Qwen2VLImageProcessorPil):
            self.image_processor.save_pretrained(path)


class System2(nn.Module):
    """VLM + N learnable foresight queries + MLP head -> latent intent (B, N, D)."""

    def __init__(self, adapter, num_queries):
        super().__init__()
        self.adapter = adapter
        self.num_queries = num_queries
        d = adapter.hidden_size
        # The queries play the role of N new tokenizer tokens whose embedding rows are the only
        # trainable rows. Kept apart from the frozen table so that nothing (weight decay
        # included) can touch the other rows. Initialised around the mean text embedding.
        with torch.no_grad():
            table = adapter.embed_tokens.weight.float()
            init = table.mean(0) + table.std(0) * torch.randn(num_queries, d, device=table.device)
        self.queries = nn.Parameter(init.to(adapter.embed_tokens.weight.dtype))
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.world_head = None   # the L_world copy of the head (``world_head_copy``)
        adapter.freeze_vision_and_embeddings()

    @property
    def hidden_size(self):
        return self.adapter.hidden_size

    def forward(self, vit_tokens, instructions, mask_language=False, hidden_layers=()):
        """Predict future ViT tokens from current ViT tokens (B, N, D) and instructions.

        ``mask_language`` removes the instruction from attention and positions (APT stage 1).
        Returns (intent (B, N, D), context) where context holds the requested intermediate
        LLM layers and the mask of the tokens they may attend (image + language).
        """
        ad = self.adapter
        device = vit_tokens.device
        ids, attention, image_mask, language = (t.to(device) for t in
                                                ad.prompt(instructions, self.num_queries))
        if mask_language:
            attention = attention * (~language)
        embeds = ad.embed_tokens(ids)
        embeds = embeds.masked_scatter(image_mask.unsqueeze(-1),
                                       vit_tokens.to(embeds.dtype).reshape(-1, embeds.shape[-1]))
        queries = self.queries.to(embeds.dtype).unsqueeze(0).expand(ids.shape[0], -1, -1)
        embeds = torch.cat([embeds[:, :-self.num_queries], queries], dim=1)
        positions = ad.positions(ids, image_mask, attention)
        last, layers = ad.run_language_model(embeds, attention, positions, hidden_layers)
        intent = self.head(last[:, -self.num_queries:])
        # gated-fusion context: image and (unless masked) instruction tokens
        context_mask = (image_mask | language) & attention.bool()
        image_features = last[image_mask].reshape(vit_tokens.shape[0], -1, last.shape[-1])
        return intent, {'layers': layers, 'mask': context_mask, 'image_features': image_features,
                        'query_states': last[:, -self.num_queries:]}

    def encode_images(self, images):
        """uint8 frames (B, S, S, 3) -> frozen ViT tokens (B, N, D), no gradient."""
        with torch.no_grad():
            return self.adapter.encode_images(np.asarray(images))
