"""Prompt text -> SDXL conditioning, the way the A1111 web UI computes it.

Rules (A1111's SDXL conditioner over its prompt handling):
- both text encoders get the same chunks: one parse of the A1111 syntax, one cut into 75-token
  chunks (the chunk boundaries depend on the tokens only); CLIP ViT-L pads a chunk with its end
  token, OpenCLIP ViT-bigG with token 0 ("!"), as A1111's two wrappers do;
- each encoder's output is its penultimate hidden state, without the final layer norm (A1111's
  `layer="hidden", layer_idx=11` for CLIP-L, `"penultimate"` for bigG); emphasis is applied to each
  encoder's output on its own (its own chunk mean), then the two are concatenated on the width;
- the pooled embedding is bigG's projected end-token output of the prompt's *first* chunk;
- the added-conditioning vector the UNet's `label_emb` reads is that pooled embedding followed by
  the sinusoid features of the size ids (original size, crop top-left, target size; A1111 sends
  (height, width), (0, 0), (height, width)), so prompt travel blends it like the reference blends
  SGM's `vector`;
- clip skip does not apply (A1111 ignores it for SDXL unless a setting asks);
- an empty negative prompt is all zeros, token embeddings and pooled part alike (A1111 forces zero
  `txt` embeddings when every negative prompt of the batch is ""); the size features stay.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from animdiff.models.tokenizer import PromptTokenizer
from animdiff.prompts.chunks import Chunk, empty_chunk, pad_chunk_count
from animdiff.prompts.encode import _apply_emphasis, prompt_chunks

# OpenCLIP's tokenizer pads with token 0 ("!"); CLIP-L's with its end token.
OPEN_CLIP_PAD_ID = 0


@functools.cache
def shared_tokenizer() -> PromptTokenizer:
    """Both SDXL encoders use CLIP's BPE vocabulary; built once per process."""
    return PromptTokenizer()


def size_ids(width: int, height: int, crop_top: int = 0, crop_left: int = 0) -> list[float]:
    """SDXL's six size ids: original (h, w), crop (top, left), target (h, w)."""
    return [float(height), float(width), float(crop_top), float(crop_left), float(height), float(width)]


class SDXLPromptEncoder:
    def __init__(
        self,
        text_encoder: Any,
        text_encoder_2: Any,
        tokenizer: PromptTokenizer,
        size_features: torch.Tensor,
    ) -> None:
        """`size_features`: the sinusoid features of the size ids, (6 * addition_time_embed_dim,)."""
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2
        self.tokenizer = tokenizer
        self.size_features = _at_least_float32(size_features)
        self.pooled_width = int(text_encoder_2.config.projection_dim)

    @classmethod
    def for_parts(cls, parts: Any, *, width: int, height: int) -> SDXLPromptEncoder:
        ids = torch.tensor(size_ids(width, height), device=parts.unet.device)
        features = parts.unet.add_time_proj(ids).flatten()
        return cls(parts.text_encoder, parts.text_encoder_2, shared_tokenizer(), features)

    def chunks(self, prompt: str, pad_id: int) -> list[Chunk]:
        return prompt_chunks(prompt, self.tokenizer, pad_id)

    @torch.no_grad()
    def encode_embeds(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (n, chunks * 77, width_l + width_g), vectors (n, pooled + size features)), in the
        encoders' dtype."""
        tok = self.tokenizer
        hidden = []
        pooled = None
        for encoder, pad_id in ((self.text_encoder, tok.eos_id), (self.text_encoder_2, OPEN_CLIP_PAD_ID)):
            empty = empty_chunk(tok.bos_id, tok.eos_id, pad_id)
            padded = pad_chunk_count([self.chunks(p, pad_id) for p in prompts], empty)
            count = len(padded[0])
            chunks = [chunk for per_prompt in padded for chunk in per_prompt]
            device = encoder.device
            tokens = torch.tensor([c.tokens for c in chunks], device=device)
            weights = torch.tensor([c.weights for c in chunks], device=device, dtype=torch.float32)
            out = encoder(input_ids=tokens, output_hidden_states=True)
            states = _at_least_float32(out.hidden_states[-2])
            if bool((weights != 1.0).any()):
                states = _apply_emphasis(states, weights.to(states.dtype))
            hidden.append(states.reshape(len(prompts), count * states.shape[1], states.shape[2]))
            if encoder is self.text_encoder_2:
                pooled = _at_least_float32(out.text_embeds).reshape(len(prompts), count, -1)[:, 0]
        assert pooled is not None
        features = self.size_features.to(pooled.device).expand(len(prompts), -1)
        dtype = self.text_encoder.dtype
        return torch.cat(hidden, dim=-1).to(dtype), torch.cat([pooled, features], dim=-1).to(dtype)

    def empty_negative(self, hidden: torch.Tensor, vector: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A1111's empty negative prompt: zero token embeddings and pooled part, size features kept."""
        vector = vector.clone()
        vector[..., : self.pooled_width] = 0
        return torch.zeros_like(hidden), vector


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Emphasis and blending in float32 (float64 stays float64, for exact tests)."""
    return x if x.dtype == torch.float64 else x.float()
