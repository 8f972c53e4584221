"""Train the demo model from nothing on the CPU: `python -m animdiff.demo.train`.

Stages of a fixed number of seeded steps each (so a rerun on the same machine and thread count
gives the same weights):

1. The VAE learns to reconstruct single frames; its latent space is then rescaled to SD1.5's
   0.18215 (`model.rescale_vae_latents`).
2. The UNet and the motion module learn to predict the noise added to the latents of whole
   16-frame clips: AnimateDiff's objective and noise schedule (epsilon, linear betas
   0.00085-0.012, 1000 steps), through our own `MotionUNet` with the reference's GroupNorm rule,
   so training sees the network exactly as sampling will.
3. 2,400 more steps, from stage 2's weights as stored (`--resume-from DIR` runs it alone on
   written weights), that teach the direction word where sampling decides the layout: from
   t = 900 up the input is pure noise, as sampling's first steps give (`noised`), so only the
   caption can say where the clip goes; moving shapes cross within 2 px of the middle line, so
   that the caption says nearly all of the clip; the timesteps are drawn with density ~ t**2,
   which keeps a fifth of them below 600 so that the colours learnt there are not forgotten.
4. 240 steps (`--decoder-steps`; 0 skips it) that teach the VAE's decoder alone what long videos
   hand it: latents that average windows which disagree a little on the shape's place, or hold a
   faded shape. Decoded as they were, a yellow ball drawn from such latents turned orange and red
   in the middle of long videos. The encoder, so the latent space the UNet learnt, keeps its
   weights, and `--resume-from DIR --focus-steps 0` runs this stage alone.

The text encoder keeps its random initialisation (trained along, it learnt to suppress the
direction word). The README's demo section has what each stage reached and what was tried.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path
from typing import get_args, get_type_hints

import numpy as np
import torch
from tqdm import tqdm

from animdiff.demo import data
from animdiff.demo.model import DemoModel, build, rescale_vae_latents, weights_dir, write_weights
from animdiff.models.detect import Kind
from animdiff.models.motion_unet import MotionUNet
from animdiff.models.tokenizer import PromptTokenizer
from animdiff.prompts.encode import prompt_chunks

TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class TrainSettings:
    seed: int = 0
    threads: int = 2
    vae_steps: int = 600
    vae_batch: int = 32
    vae_lr: float = 2e-3
    pairs: int = 2048  # clip pairs pre-encoded for stage 2
    steps: int = 4500
    batch_pairs: int = 4  # 8 clips per step
    lr: float = 1e-3
    warmup: int = 100
    caption_dropout: float = 0.05
    #: Share of captions written as prompt travel sends them (", a red ball moving right, ").
    travel_commas: float = 0.3
    #: t = 1000 * u**high_noise_power: below 1 draws high-noise timesteps more often (0.5: 75 % above 250).
    high_noise_power: float = 0.5
    #: Per-sample loss weight (1 - alpha_bar) / alpha_bar (the x0 error's scale), clamped to [1, this].
    high_noise_weight: float = 20.0
    min_timestep: int = 0
    #: Moving shapes cross within this many pixels of the middle line (None: anywhere).
    cross_spread: float | None = None
    #: From this timestep up the input holds no clip (pure noise, as sampling's first step gives) and
    #: the target is the noise that implies the real clip; 1000: never.
    blind_above: int = TRAIN_TIMESTEPS
    #: From this timestep up one clip of each pair gets the clip played backwards as its input (the
    #: target is the noise that leaves the real clip), so only the direction word says which order
    #: to keep; 1000: never.
    reverse_above: int = TRAIN_TIMESTEPS
    #: Clips from the world that wraps around at the borders (`data.random_pair`'s `wrap`).
    wrap: bool = False
    #: Where the input is blind, the clip to draw is the pool's clip of the same caption that the noise
    #: suggests most (`suggested_clips`), not the pair's own: the place would come from the noise and
    #: the rest from the caption, as sampling needs it for long videos (tried; not learnt, see there).
    pick: bool = False
    #: Train the text encoder too (False: it keeps its random initialisation, see train_denoiser).
    train_text_encoder: bool = False
    #: Stage 3 (`focus_steps=0`: none): from the stage-2 weights as stored, blind at the top of the
    #: schedule, on centre-line clips (see the module's docstring).
    focus_steps: int = 2400
    focus_min_timestep: int = 0
    focus_weight: float = 20.0
    #: Stage 3's high_noise_power: 0.3333 draws t with density ~ t**2 (78 % from 600 up, 22 % below,
    #: which keeps the low timesteps from being forgotten: trained only from 600 up, colours slipped).
    focus_high_noise_power: float = 0.3333
    focus_lr: float = 1e-3
    focus_pairs: int = 512
    focus_cross_spread: float | None = 2.0
    focus_blind_above: int = 900
    focus_reverse_above: int = TRAIN_TIMESTEPS
    focus_wrap: bool = False
    focus_pick: bool = False
    #: Stage 4 (`decoder_steps=0`: none): the decoder alone learns averaged and faded latents
    #: (`decoder_example`).
    decoder_steps: int = 240
    decoder_batch: int = 16
    decoder_lr: float = 1e-3
    #: Two latents averaged are of the same clip at most this many frames apart.
    decoder_max_gap: float = 8.0
    #: Half the latents are faded towards the background's by a factor drawn from [this, 1].
    decoder_fade: float = 0.7
    #: Share of the latents that are one frame's, not an average of two.
    decoder_clean_share: float = 0.5
    ema: float = 0.999
    snapshot_every: int = 0  # also write the EMA weights every N steps (to <out>-step<N>), 0: never


def alphas_cumprod() -> torch.Tensor:
    """The schedule sampling runs the demo model with: its v3 motion module's family's (AnimateDiff's
    betas linear from 0.00085 to 0.012, diffusers' "linear"), taken from the same object the
    pipeline builds its scheduler from, so that training and sampling cannot disagree on it."""
    from animdiff.family import motion_family

    return motion_family(Kind.MM_V3).betas.alphas_cumprod()


def _lr(settings: TrainSettings, step: int, total: int, base: float) -> float:
    warm = min(1.0, (step + 1) / settings.warmup)
    return base * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / total)))


def _descend(optimiser: torch.optim.Optimizer, loss: torch.Tensor, parameters, lr: float) -> None:
    """One step of the VAE's stages: gradients clipped to norm 1, the learning rate set for this step."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, 1.0)
    for group in optimiser.param_groups:
        group["lr"] = lr
    optimiser.step()


# --- stage 1: the VAE ------------------------------------------------------------------------------------


def train_vae(model: DemoModel, settings: TrainSettings, rng: np.random.Generator) -> float:
    """Returns the final reconstruction MSE (on [-1, 1] pixels, mean of the last 50 steps)."""
    vae = model.vae.train().requires_grad_(True)
    optimiser = torch.optim.AdamW(vae.parameters(), lr=settings.vae_lr, weight_decay=0.0)
    losses: list[float] = []
    bar = tqdm(range(settings.vae_steps), desc="VAE", unit="step")
    for step in bar:
        frames = _random_frames(rng, settings.vae_batch)
        posterior = vae.encode(frames).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        mse = torch.nn.functional.mse_loss(reconstruction, frames)
        loss = mse + 1e-6 * posterior.kl().mean()
        _descend(optimiser, loss, vae.parameters(), _lr(settings, step, settings.vae_steps, settings.vae_lr))
        losses.append(mse.item())
        if step % 10 == 0:
            bar.set_postfix(mse=f"{np.mean(losses[-50:]):.4f}")
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        means = torch.cat([vae.encode(_random_frames(rng, 64)).latent_dist.mean for _ in range(4)])
    rescale_vae_latents(vae, means.std().item())
    return float(np.mean(losses[-50:]))


def _random_frames(rng: np.random.Generator, count: int) -> torch.Tensor:
    out = []
    while len(out) < count:
        spec = data.random_pair(rng)[0]
        clip = data.render(spec)
        out.extend(clip[rng.choice(data.FRAMES, size=min(4, count - len(out)), replace=False)])
    return torch.from_numpy(np.stack(out))


# --- stage 4: the decoder learns what averaged windows give it ------------------------------------------


@dataclass(frozen=True)
class DecoderExample:
    """Two frames of one clip, the weight of the first in their latents' average, how much that
    average is faded towards the background's latent, and the frame the decoder should draw: the
    shape at full strength where the two places' weighted average puts it (the demo's world has no
    faded or doubled shapes, and a pixel average of two places would draw both, half seen)."""

    first: np.ndarray
    second: np.ndarray
    weight: float
    fade: float
    target: np.ndarray


def frame_at(spec: data.ClipSpec, frame: float) -> np.ndarray:
    """The clip's shape where it is at `frame` (fractional frames lie between), as one (3, H, W) frame."""
    still = replace(spec, direction=data.STATIC, start=spec.centre(frame), step=0.0)  # type: ignore[arg-type]
    return data.render(still, frames=1)[0]


def decoder_example(settings: TrainSettings, rng: np.random.Generator) -> DecoderExample:
    spec = data.random_pair(rng)[0]
    last = data.FRAMES - 1
    first = float(rng.uniform(0, last))
    second = float(np.clip(first + rng.uniform(-settings.decoder_max_gap, settings.decoder_max_gap), 0, last))
    weight = 1.0 if rng.random() < settings.decoder_clean_share else float(rng.uniform(0, 1))
    fade = 1.0 if rng.random() < 0.5 else float(rng.uniform(settings.decoder_fade, 1))
    middle = weight * first + (1 - weight) * second
    return DecoderExample(frame_at(spec, first), frame_at(spec, second), weight, fade, frame_at(spec, middle))


def background_latent(vae: torch.nn.Module) -> torch.Tensor:
    """The plain background's latent (1, C, h, w): what a faded shape fades towards."""
    grey = np.asarray(data.BACKGROUND, np.float32) / 127.5 - 1
    background = np.broadcast_to(grey[:, None, None], (1, 3, data.SIZE, data.SIZE)).copy()
    with torch.no_grad():
        return vae.encode(torch.from_numpy(background)).latent_dist.mean


def decoder_input(
    vae: torch.nn.Module, examples: Sequence[DecoderExample], grey: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Each example's two frames encoded (a posterior draw, as training the UNet took them), averaged
    with its weight and faded towards `grey`, the plain background's latent."""
    frames = torch.from_numpy(np.stack([f for e in examples for f in (e.first, e.second)]))
    with torch.no_grad():
        posterior = vae.encode(frames).latent_dist
        latents = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
    weight, fade = (
        torch.tensor([getattr(e, name) for e in examples]).view(-1, 1, 1, 1) for name in ("weight", "fade")
    )
    average = weight * latents[0::2] + (1 - weight) * latents[1::2]
    return grey + fade * (average - grey)


def train_decoder(model: DemoModel, settings: TrainSettings, rng: np.random.Generator) -> float:
    """Returns the final loss (MSE on [-1, 1] pixels, mean of the last 50 steps)."""
    vae = model.vae.eval().requires_grad_(False)
    trained = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for parameter in trained:
        parameter.requires_grad_(True)
    vae.decoder.train()
    optimiser = torch.optim.AdamW(trained, lr=settings.decoder_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(settings.seed + 4)
    grey = background_latent(vae)
    losses: list[float] = []
    bar = tqdm(range(settings.decoder_steps), desc="decoder", unit="step")
    for step in bar:
        examples = [decoder_example(settings, rng) for _ in range(settings.decoder_batch)]
        latents = decoder_input(vae, examples, grey, generator)
        targets = torch.from_numpy(np.stack([e.target for e in examples]))
        loss = torch.nn.functional.mse_loss(vae.decode(latents).sample, targets)
        _descend(optimiser, loss, trained, _lr(settings, step, settings.decoder_steps, settings.decoder_lr))
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(mse=f"{np.mean(losses[-50:]):.4f}")
    vae.eval().requires_grad_(False)
    return float(np.mean(losses[-50:]))


# --- stage 2: UNet, motion module and text encoder ------------------------------------------------------


@dataclass
class EncodedPool:
    means: torch.Tensor  # (clips, 4, frames, h, w), scaled latents' posterior means
    stds: torch.Tensor
    captions: list[str]  # clips 2i and 2i+1 are a pair

    @cached_property
    def rows_by_caption(self) -> dict[str, torch.Tensor]:
        groups: dict[str, list[int]] = {}
        for i, text in enumerate(self.captions):
            groups.setdefault(text, []).append(i)
        return {text: torch.tensor(rows) for text, rows in groups.items()}


@torch.no_grad()
def clip_latents(vae: torch.nn.Module, specs: Sequence[data.ClipSpec]) -> tuple[torch.Tensor, torch.Tensor]:
    """The clips' scaled latent posterior (mean, std), each (clips, 4, frames, h, w) as the motion
    UNet takes them."""
    clips = torch.from_numpy(np.concatenate([data.render(spec) for spec in specs]))
    posterior = vae.encode(clips).latent_dist
    shape = (len(specs), data.FRAMES, *posterior.mean.shape[1:])
    scale = vae.config.scaling_factor
    mean, std = ((x * scale).reshape(shape).permute(0, 2, 1, 3, 4) for x in (posterior.mean, posterior.std))
    return mean, std


@torch.no_grad()
def encode_pool(vae: torch.nn.Module, settings: TrainSettings, rng: np.random.Generator) -> EncodedPool:
    means, stds, captions = [], [], []
    for _ in tqdm(range(settings.pairs), desc="clips", unit="pair"):
        pair = data.random_pair(rng, cross_spread=settings.cross_spread, wrap=settings.wrap)
        mean, std = clip_latents(vae, pair)
        means.append(mean)
        stds.append(std)
        captions.extend(spec.caption for spec in pair)
    return EncodedPool(torch.cat(means), torch.cat(stds), captions)


class CaptionTokens:
    """Each caption's 77 tokens, exactly as the prompt encoder will chunk it at sampling time."""

    def __init__(self) -> None:
        self._tokenizer = PromptTokenizer()
        self._cache: dict[str, list[int]] = {}

    def __call__(self, captions: list[str]) -> torch.Tensor:
        rows = []
        for text in captions:
            if text not in self._cache:
                chunks = prompt_chunks(text, self._tokenizer)
                assert len(chunks) == 1, text
                self._cache[text] = list(chunks[0].tokens)
            rows.append(self._cache[text])
        return torch.tensor(rows)


def frame_context(text_encoder: torch.nn.Module, tokens: CaptionTokens, captions: list[str]) -> torch.Tensor:
    """Each caption's encoding once per frame of its clip, as the motion UNet's cross-attention
    takes it (clips x frames, tokens, width)."""
    return text_encoder(input_ids=tokens(captions)).last_hidden_state.repeat_interleave(data.FRAMES, dim=0)


def train_denoiser(
    model: DemoModel,
    pool: EncodedPool,
    settings: TrainSettings,
    rng: np.random.Generator,
    snapshot: Callable[[int], None] | None = None,
) -> tuple[DemoModel, float]:
    """Returns an EMA copy of the model and the final loss (mean of the last 100 steps)."""
    from diffusers import UNetMotionModel

    unet = UNetMotionModel.from_unet2d(model.unet, model.motion)
    # Taken before MotionUNet wraps the norms: these tensors share storage with the parameters.
    trained_state = unet.state_dict()
    network = MotionUNet(unet, Kind.MM_V3, groupnorm="reference").train()
    text_encoder = model.text_encoder.train(settings.train_text_encoder)
    text_encoder.requires_grad_(settings.train_text_encoder)
    trainable = [text_encoder] if settings.train_text_encoder else []
    params = [*network.parameters(), *(p for module in trainable for p in module.parameters())]
    for p in params:
        p.requires_grad_(True)
    ema = [p.detach().clone() for p in params]
    optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    tokens = CaptionTokens()
    schedule = alphas_cumprod()
    weights = _loss_weights(schedule, settings)
    generator = torch.Generator().manual_seed(settings.seed + 2)
    losses: list[float] = []
    pairs = len(pool.captions) // 2
    bar = tqdm(range(settings.steps), desc="UNet", unit="step")
    for step in bar:
        chosen = rng.integers(0, pairs, settings.batch_pairs)
        rows = torch.from_numpy(np.stack([2 * chosen, 2 * chosen + 1], axis=1).reshape(-1))
        means = pool.means[rows]
        latents = means + pool.stds[rows] * torch.randn(means.shape, generator=generator)
        captions = [_caption(pool.captions[i], settings, rng) for i in rows.tolist()]
        # One noise and one timestep per pair: the two clips differ only in their direction.
        noise = torch.randn((settings.batch_pairs, *latents.shape[1:]), generator=generator)
        noise = noise.repeat_interleave(2, dim=0)
        u = torch.rand(settings.batch_pairs, generator=generator)
        span = TRAIN_TIMESTEPS - settings.min_timestep
        t = (settings.min_timestep + u**settings.high_noise_power * span).long().clamp(0, TRAIN_TIMESTEPS - 1)
        t = t.repeat_interleave(2)
        if settings.pick:
            latents = suggested_clips(pool, captions, latents, noise, schedule[t], t >= settings.blind_above)
        backwards = None
        if settings.reverse_above < TRAIN_TIMESTEPS:  # drawn only then: stage 2 keeps its random stream
            first = torch.rand(settings.batch_pairs, generator=generator) < 0.5
            backwards = torch.stack([first, ~first], dim=1).reshape(-1) & (t >= settings.reverse_above)
        noisy, target = noised(
            latents, noise, schedule[t], blind=t >= settings.blind_above, backwards=backwards
        )
        with torch.set_grad_enabled(settings.train_text_encoder):
            context = frame_context(text_encoder, tokens, captions)
        prediction = network(noisy, t, context)
        errors = (prediction - target).pow(2).mean(dim=(1, 2, 3, 4))
        loss = (weights[t] * errors).mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for group in optimiser.param_groups:
            group["lr"] = _lr(settings, step, settings.steps, settings.lr)
        optimiser.step()
        decay = min(settings.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for shadow, p in zip(ema, params, strict=True):
                shadow.lerp_(p.detach(), 1 - decay)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
        if snapshot is not None and settings.snapshot_every and (step + 1) % settings.snapshot_every == 0:
            live = [p.detach().clone() for p in params]
            _use_weights(model, params, ema, trained_state)
            snapshot(step + 1)
            _use_weights(model, params, live, trained_state)
    _use_weights(model, params, ema, trained_state)
    return model, float(np.mean(losses[-100:]))


def suggested_clips(
    pool: EncodedPool,
    captions: list[str],
    latents: torch.Tensor,
    noise: torch.Tensor,
    alpha_bar: torch.Tensor,
    where: torch.Tensor,
) -> torch.Tensor:
    """`latents` with each row in `where` replaced by the pool clip of that row's caption (any clip
    for an empty one) most likely to have given `noise` as its noised input at `alpha_bar`.

    A blind top trained on the pair's own clip learns the mean over every clip of the caption: one
    fixed clip when the caption fixes the place (the ordinary world's centre line), a blur when it
    does not (the wrapping world). Sampling, though, starts every context window from its own
    noise, and a long video needs each window to draw the path its (shared) noise suggests, in the
    direction the word says. This target asks the top for exactly that, so that neighbouring
    windows, sharing most of their noise, could agree on one path; 2,400 steps from the shipped
    weights did not learn it (the network drew the caption's mean and ignored the direction word:
    README, "Ten ways round it were measured"), and the option stays for further tries.
    """
    out = latents.clone()
    for row in torch.nonzero(where).flatten().tolist():
        text = _plain(captions[row])
        rows = pool.rows_by_caption.get(text) if text else None
        candidates = pool.means if rows is None else pool.means[rows]
        a = alpha_bar[row].double()
        flat = candidates.flatten(1).double()
        # log p(input | clip) up to a constant: the input is sqrt(a) clip + sqrt(1 - a) noise.
        score = a.sqrt() * (flat @ noise[row].flatten().double()) - a / 2 * flat.pow(2).sum(dim=1)
        best = int(score.argmax())
        out[row] = candidates[best]
    return out


def _plain(caption: str) -> str:
    """The pool caption behind a training caption (`_caption` may wrap it in travel commas)."""
    return caption.strip(", ")


def noised(
    latents: torch.Tensor,
    noise: torch.Tensor,
    alpha_bar: torch.Tensor,
    blind: torch.Tensor,
    backwards: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's input and the noise it should predict, per clip.

    Ordinarily the clip noised to `alpha_bar` and its noise. Where `blind`, the input is the noise
    alone, as at sampling's first step, which starts from pure noise although the schedule's last
    timestep still holds sqrt(alpha_bar) = 0.04 of the clip: trained on that remnant, the network
    reads the clip's path out of it, and at sampling reads a path out of the seed's noise instead
    of drawing the caption's. The target is then the noise that, taken from this input, leaves the
    real clip, so the caption alone must say where the clip goes.

    Where `backwards`, the input holds the clip played backwards (frames reversed) and the target is
    again the noise that leaves the real clip: the input says where the shape is and which path it
    is on, and only the direction word which way along it.
    """
    a = alpha_bar.view(-1, 1, 1, 1, 1)
    reversed_ = torch.zeros_like(blind) if backwards is None else backwards
    reversed_ = reversed_.view(-1, 1, 1, 1, 1)
    blind = blind.view(-1, 1, 1, 1, 1)
    signal = torch.where(reversed_, latents.flip(2), latents)
    noisy = torch.where(blind, noise, a.sqrt() * signal + (1 - a).sqrt() * noise)
    # Where the input is the clip as it is, its own noise (bit for bit what stage 2 always trained on).
    implied = (noisy - a.sqrt() * latents) / (1 - a).sqrt()
    target = torch.where(blind | reversed_, implied, noise)
    return noisy, target


def _loss_weights(schedule: torch.Tensor, settings: TrainSettings) -> torch.Tensor:
    """Weights per timestep, normalised to average 1 over the timesteps training draws.

    The epsilon loss hardly rewards getting the layout right where the noise is high: there an
    error in the clean image counts alpha_bar / (1 - alpha_bar) times (1/212 at t=999), yet that is
    where sampling commits to where the shape goes and which way it moves, and where only the text
    can say. Weighting those timesteps towards the clean-image error's scale asks the model to
    read the direction word there.
    """
    weights = ((1 - schedule) / schedule).clamp(1.0, settings.high_noise_weight)
    t = torch.arange(TRAIN_TIMESTEPS, dtype=torch.float64)
    # t = 1000 * u**p has density proportional to t**(1/p - 1).
    density = ((t + 0.5) / TRAIN_TIMESTEPS) ** (1 / settings.high_noise_power - 1)
    mean = float((weights.double() * density).sum() / density.sum())
    return weights / mean


def _caption(text: str, settings: TrainSettings, rng: np.random.Generator) -> str:
    """Empty for CFG's unconditional case; sometimes in the commas a travel keyframe adds."""
    if rng.random() < settings.caption_dropout:
        return ""
    return f", {text}, " if rng.random() < settings.travel_commas else text


@torch.no_grad()
def _use_weights(
    model: DemoModel, params: list[torch.Tensor], values: list[torch.Tensor], state: dict[str, torch.Tensor]
) -> None:
    """Put `values` into the training parameters and the model's UNet and motion module."""
    for p, value in zip(params, values, strict=True):
        p.copy_(value)
    model.unet.load_state_dict({k: v for k, v in state.items() if ".motion_modules." not in k})
    model.motion.load_state_dict({k: v for k, v in state.items() if ".motion_modules." in k})


def focus_settings(settings: TrainSettings) -> TrainSettings:
    """Stage 3's settings: stage 2's objective with stage 3's timesteps, weights, data and blind top."""
    return replace(
        settings,
        steps=settings.focus_steps,
        lr=settings.focus_lr,
        warmup=min(settings.warmup, 50),
        min_timestep=settings.focus_min_timestep,
        high_noise_weight=settings.focus_weight,
        high_noise_power=settings.focus_high_noise_power,
        pairs=settings.focus_pairs,
        cross_spread=settings.focus_cross_spread,
        blind_above=settings.focus_blind_above,
        reverse_above=settings.focus_reverse_above,
        wrap=settings.focus_wrap,
        pick=settings.focus_pick,
        snapshot_every=0,
    )


def round_as_stored(model: DemoModel) -> None:
    """Round every weight to float16 precision, as the files store them, so that stage 3 starts from
    the same numbers whether it follows stage 2 here or resumes from written files."""
    with torch.no_grad():
        for module in (model.unet, model.vae, model.text_encoder, model.motion):
            for tensor in module.state_dict().values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.half().float())


def load_demo(folder: Path) -> DemoModel:
    """A written demo model (a models folder), to resume from."""
    from animdiff.demo.model import CHECKPOINT_NAME, MOTION_NAME
    from animdiff.models.load import load_checkpoint, load_motion_module

    parts = load_checkpoint(folder / "Stable-diffusion" / CHECKPOINT_NAME)
    motion = load_motion_module(folder / "AnimateDiff" / MOTION_NAME)
    return DemoModel(parts.unet, parts.vae, parts.text_encoder, motion.adapter)


def train(settings: TrainSettings, out: Path, resume_from: Path | None = None) -> dict[str, Path]:
    """All stages from nothing; with `resume_from` (written weights), stages 3 and 4 only."""
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    started = time.monotonic()
    report = []
    if resume_from is None:
        rng = np.random.default_rng(settings.seed)
        model = build(settings.seed)
        vae_mse = train_vae(model, settings, rng)
        report.append(f"VAE reconstruction MSE {vae_mse:.4f} ({(time.monotonic() - started) / 60:.1f} min)")
        pool = encode_pool(model.vae, settings, rng)

        def snapshot(step: int) -> None:
            write_weights(model, out.with_name(f"{out.name}-step{step}"))

        model, loss = train_denoiser(model, pool, settings, rng, snapshot)
        report.append(f"denoiser loss {loss:.4f} ({(time.monotonic() - started) / 60:.1f} min)")
    else:
        model = load_demo(resume_from)
    round_as_stored(model)
    if settings.focus_steps:
        focus = focus_settings(settings)
        rng = np.random.default_rng(settings.seed + 3)
        pool = encode_pool(model.vae, focus, rng)
        model, loss = train_denoiser(model, pool, focus, rng)
        report.append(f"high-noise loss {loss:.4f} ({(time.monotonic() - started) / 60:.1f} min)")
    if settings.decoder_steps:
        loss = train_decoder(model, settings, np.random.default_rng(settings.seed + 4))
        report.append(f"decoder loss {loss:.4f} ({(time.monotonic() - started) / 60:.1f} min)")
    for module in (model.unet, model.vae, model.text_encoder, model.motion):
        module.eval().requires_grad_(False)
    written = write_weights(model, out)
    minutes = (time.monotonic() - started) / 60
    print("; ".join([*report, f"total {minutes:.1f} min on {settings.threads} threads"]))
    for name, path in written.items():
        print(f"{name}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return written


def _optional_float(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def main(argv: list[str] | None = None) -> None:
    defaults = TrainSettings()
    parser = argparse.ArgumentParser(prog="python -m animdiff.demo.train", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=weights_dir(), help="models folder to write (default: the package's)"
    )
    parser.add_argument(
        "--resume-from",
        type=Path,
        default=None,
        help="stages 3 and 4 only, from the weights in this folder (stage 2's for stage 3)",
    )
    types = get_type_hints(TrainSettings)
    for field in fields(TrainSettings):
        option = f"--{field.name.replace('_', '-')}"
        value = getattr(defaults, field.name)
        if isinstance(value, bool):
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=value)
        elif type(None) in get_args(types[field.name]):
            parser.add_argument(option, type=_optional_float, default=value, help="a number, or none")
        else:
            parser.add_argument(option, type=type(value), default=value)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    resume_from = args.pop("resume_from")
    train(TrainSettings(**args), out, resume_from)


if __name__ == "__main__":
    main()
