"""Prompt text -> CLIP embeddings, the way the A1111 web UI computes them.

Rules (A1111's "Original" emphasis and its long-prompt handling):
- the prompt is parsed for `(word:1.2)` / `[word]` / `BREAK` (syntax.py) and cut into chunks of
  75 tokens (chunks.py); each chunk is encoded on its own as 77 tokens and the results are
  concatenated along the token axis;
- each chunk's output is multiplied token-wise by its weights, then rescaled so its mean equals
  the unweighted output's mean (the mean over that chunk's whole token x width tensor);
- clip skip N > 1 takes the hidden state N layers from the end and applies the final layer norm;
- prompts encoded together (positive and negative, prompt-travel keyframes) are padded to the
  same number of chunks with the empty prompt's encoding, so they can share one UNet batch.
"""

from __future__ import annotations

import torch
from transformers import CLIPTextModel

from animdiff.errors import ParamsError
from animdiff.models.tokenizer import PromptTokenizer
from animdiff.prompts.chunks import Chunk, build_chunks, empty_chunk, pad_chunk_count
from animdiff.prompts.syntax import parse_attention


class PromptEncoder:
    def __init__(self, text_encoder: CLIPTextModel, tokenizer: PromptTokenizer, clip_skip: int = 1) -> None:
        layers = text_encoder.config.num_hidden_layers
        if not 1 <= clip_skip <= layers:
            raise ParamsError(
                f"clip_skip {clip_skip} is out of range for a {layers}-layer text encoder (1..{layers})"
            )
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.clip_skip = clip_skip

    def chunks(self, prompt: str) -> list[Chunk]:
        return prompt_chunks(prompt, self.tokenizer)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """(len(prompts), chunks * 77, width), all padded to the longest prompt's chunk count."""
        empty = empty_chunk(self.tokenizer.bos_id, self.tokenizer.eos_id, self.tokenizer.pad_id)
        padded = pad_chunk_count([self.chunks(p) for p in prompts], empty)
        encoded = self._encode_chunks([chunk for chunks in padded for chunk in chunks])
        return encoded.reshape(len(prompts), -1, encoded.shape[2])

    def encode_embeds(self, prompts: list[str]) -> tuple[torch.Tensor, None]:
        """The model-family interface (family.py): SD1.5 has no added-conditioning vector."""
        return self.encode(prompts), None

    def _encode_chunks(self, chunks: list[Chunk]) -> torch.Tensor:
        device = self.text_encoder.device
        tokens = torch.tensor([c.tokens for c in chunks], device=device)
        weights = torch.tensor([c.weights for c in chunks], device=device, dtype=torch.float32)
        hidden = self._hidden(tokens).float()
        if bool((weights != 1.0).any()):
            hidden = _apply_emphasis(hidden, weights)
        return hidden.to(self.text_encoder.dtype)

    def _hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.clip_skip == 1:
            return self.text_encoder(input_ids=tokens).last_hidden_state
        out = self.text_encoder(input_ids=tokens, output_hidden_states=True)
        # transformers 5 flattened CLIPTextModel; 4.x keeps the layers under `text_model`.
        final_norm = getattr(self.text_encoder, "text_model", self.text_encoder).final_layer_norm
        return final_norm(out.hidden_states[-self.clip_skip])


def prompt_chunks(prompt: str, tok: PromptTokenizer, pad_id: int | None = None) -> list[Chunk]:
    """The prompt's 77-token chunks as A1111 cuts them (no model needed: training uses this too).
    `pad_id`: the tokenizer's unless given (SDXL's second encoder pads with its own)."""
    return build_chunks(
        parse_attention(prompt),
        tok,
        comma_id=tok.comma_id,
        bos_id=tok.bos_id,
        eos_id=tok.eos_id,
        pad_id=tok.pad_id if pad_id is None else pad_id,
    )


def _apply_emphasis(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Token weights, then each chunk rescaled back to its original mean (A1111's "Original")."""
    original_mean = hidden.mean(dim=(1, 2), keepdim=True)
    weighted = hidden * weights.unsqueeze(-1)
    # A chunk whose weights are all 1 is unchanged (A1111's rescale is then exactly 1); skipping it
    # keeps a chunk whose mean happens to be 0 from becoming 0/0.
    changed = (weights != 1.0).any(dim=1).view(-1, 1, 1)
    ratio = torch.where(changed, original_mean / weighted.mean(dim=(1, 2), keepdim=True), 1.0)
    return weighted * ratio
