"""A job's prompt settings -> one text embedding per generated frame, plus the negative one.

Prompt travel is resolved here: each keyframe's full prompt is encoded once, and every frame
gets the interpolation between its previous and next keyframe (prompts/travel.py decides which,
and at what rate). LoRA tags are collected from every part of the prompt (head, keyframes,
tail) and apply to the whole animation; they are removed from the text before encoding.
The negative prompt is not travelled and keeps its tags as text, as in A1111.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from animdiff.prompts.encode import PromptEncoder
from animdiff.prompts.syntax import ExtraNetwork, extract_extra_networks, merge_networks
from animdiff.prompts.travel import (
    TravelPrompt,
    check_keyframes,
    closed_loop_prompts,
    interpolate_embeddings,
    parse_travel,
    schedule,
)


@dataclass(frozen=True)
class PromptPlan:
    """What to encode: keyframe -> prompt text (key 0 alone without travel) and per-frame blends."""

    prompts: dict[int, str]
    blends: list[tuple[int, int, float]] | None
    networks: list[ExtraNetwork] = field(default_factory=list)


def plan_prompts(prompt: str, *, video_length: int, batch: int, context: int, closed_loop: str) -> PromptPlan:
    travel = parse_travel(prompt)
    if travel is None:
        text, networks = extract_extra_networks(prompt)
        return PromptPlan({0: text}, None, merge_networks(networks))
    check_keyframes(travel, video_length)
    prompts, networks = _keyframe_texts(travel)
    looped = closed_loop_prompts(video_length, context, closed_loop)
    return PromptPlan(prompts, schedule(sorted(prompts), batch, looped), merge_networks(networks))


def _keyframe_texts(travel: TravelPrompt) -> tuple[dict[int, str], list[ExtraNetwork]]:
    prompts: dict[int, str] = {}
    networks: list[ExtraNetwork] = []
    for frame, text in travel.keyframe_prompts().items():
        cleaned, found = extract_extra_networks(text)
        prompts[frame] = cleaned
        networks.extend(found)
    return prompts, networks


def frame_embeddings(
    encoder: PromptEncoder, plan: PromptPlan, negative: str, batch: int, method: str = "slerp"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cond (batch, tokens, width), uncond (1, tokens, width)), padded to the same token count."""
    cond, uncond = frame_conditioning(encoder, plan, negative, batch, method)
    return cond.tokens, uncond.tokens


@dataclass(frozen=True)
class TextConditioning:
    """Token embeddings (rows, tokens, width) and, for SDXL, the added-conditioning vectors (rows, width)."""

    tokens: torch.Tensor
    vector: torch.Tensor | None = None


def frame_conditioning(
    encoder: Any, plan: PromptPlan, negative: str, batch: int, method: str = "slerp"
) -> tuple[TextConditioning, TextConditioning]:
    """(cond with one row per generated frame, uncond with one row), for any family's encoder.

    `encoder.encode_embeds(texts)` gives (tokens, vectors or None) per text (family.py). Prompt travel
    blends the token embeddings and, apart from them, the vectors, as the reference blends SGM's
    `crossattn` and `vector` separately. An empty negative prompt goes through the encoder's
    `empty_negative` when it has one (SDXL: A1111 zeroes it).
    """
    frames = sorted(plan.prompts)
    tokens, vectors = encoder.encode_embeds([plan.prompts[f] for f in frames] + [negative])
    uncond_tokens, uncond_vector = tokens[-1:], None if vectors is None else vectors[-1:]
    if negative == "" and uncond_vector is not None and hasattr(encoder, "empty_negative"):
        uncond_tokens, uncond_vector = encoder.empty_negative(uncond_tokens, uncond_vector)
    uncond = TextConditioning(uncond_tokens, uncond_vector)
    per_frame = [tokens[:-1]] + ([] if vectors is None else [vectors[:-1]])
    out = []
    for stacked in per_frame:
        keyframes = dict(zip(frames, stacked, strict=True))
        if plan.blends is None:
            out.append(keyframes[0].unsqueeze(0).expand(batch, *stacked.shape[1:]))
        else:
            out.append(interpolate_embeddings(keyframes, plan.blends, method))
    return TextConditioning(out[0], out[1] if len(out) > 1 else None), uncond
