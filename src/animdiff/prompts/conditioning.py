"""A job's prompt settings -> one text embedding per generated frame, plus the negative one.

Prompt travel is resolved here: each keyframe's full prompt is encoded once, and every frame
gets the interpolation between its previous and next keyframe (prompts/travel.py decides which,
and at what rate). LoRA tags are collected from every part of the prompt (head, keyframes,
tail) and apply to the whole animation; they are removed from the text before encoding.
The negative prompt is not travelled and keeps its tags as text, as in A1111.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    frames = sorted(plan.prompts)
    encoded = encoder.encode([plan.prompts[f] for f in frames] + [negative])
    keyframes = dict(zip(frames, encoded[:-1], strict=True))
    uncond = encoded[-1:]
    if plan.blends is None:
        return keyframes[0].unsqueeze(0).expand(batch, -1, -1), uncond
    return interpolate_embeddings(keyframes, plan.blends, method), uncond
