"""Measure what the demo model draws: `python -m animdiff.demo.evaluate`.

Renders a fixed grid of prompts and seeds through the ordinary pipeline (the shipped files loaded
as a user's would be) and reads each clip back with `analyse`, which finds the shape by its
distance from the plain background. On the training data itself `analyse` is right every time
(tests/demo check that), so what it reports about samples is the model's doing.

- **colour**: the palette colour nearest to the shape's mean pixel;
- **direction**: the sign of the steeper axis of a straight-line fit to the centroid over the
  frames; "static" when the fitted travel is under a quarter of the data's shortest;
- **travel**: the fitted distance from the first frame to the last, against the data's;
- **seams** (long videos through context windows): a *jump* is a frame-to-frame centroid move of
  more than `JUMP_STEPS` times the data's per-frame step; the shape must keep its colour too,
  and `forward` says how many of its moves go the word's way (a ball that hovers makes no jumps).

`--word-dependence` measures something else, on the network rather than on samples: how much its
noise prediction for training clips gets worse when one word of the caption is swapped for a
wrong one (`word_dependence`). A word the model reads raises that loss; one it ignores leaves it
where it was. It tells "the model ignores the direction word" apart from "sampling loses it".
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from animdiff.choices import CLOSED_LOOP_MODES, FUSE_METHODS
from animdiff.demo import data

if TYPE_CHECKING:  # torch and the models load only when a measurement runs
    import torch

    from animdiff.demo.model import DemoModel

#: A pixel belongs to the shape when a channel differs from the background by more than this.
SHAPE_THRESHOLD = 48
#: Frames where fewer pixels than this differ count as "no shape visible".
MIN_PIXELS = 6
#: A frame-to-frame move above this many data steps is a jump.
JUMP_STEPS = 3.0
EVAL_COLOURS = tuple(data.COLOURS)
EVAL_DIRECTIONS = tuple(data.DIRECTIONS)
EVAL_SEEDS = (0, 1, 2, 3)
#: The long videos' context batch size (the target's "64 frames at context 16").
LONG_CONTEXT = 16


@dataclass(frozen=True)
class ClipReading:
    colour: str | None  # None: no shape in any frame
    direction: str  # right/left/up/down/static
    travel: float  # pixels at the clip's size, from the fitted line
    visible: float  # share of frames with a shape
    centroids: list[tuple[float, float] | None]
    colours: list[str | None]
    size: tuple[int, int] = (data.SIZE, data.SIZE)  # width, height: the period of the centres

    def move(self, a: int, b: int) -> tuple[float, float]:
        """From frame a's centre to frame b's, the short way round (see `circular_centre`)."""
        (xa, ya), (xb, yb) = self.centroids[a], self.centroids[b]
        return wrapped(xb - xa, self.size[0]), wrapped(yb - ya, self.size[1])


def wrapped(offset: float, period: float) -> float:
    """`offset` brought into [-period / 2, period / 2): the short way round a circle."""
    return (offset + period / 2) % period - period / 2


def circular_centre(positions: np.ndarray, period: int) -> float:
    """The mean of pixel positions taken on a circle of the frame's size: a shape that leaves on one
    side and comes in on the other (a model may draw a world that wraps) has its centre where it
    is, not between its two halves; for a shape away from the borders it is the ordinary mean."""
    angle = positions * (2 * np.pi / period)
    mean = np.arctan2(np.sin(angle).mean(), np.cos(angle).mean())
    return float(mean * period / (2 * np.pi) % period)


def _nearest_colour(pixel: np.ndarray) -> str:
    names = list(data.COLOURS)
    palette = np.asarray([data.COLOURS[n] for n in names], np.float32)
    return names[int(np.argmin(((palette - pixel) ** 2).sum(axis=1)))]


def analyse(frames: np.ndarray) -> ClipReading:
    """`frames`: (frames, H, W, 3) uint8 RGB."""
    frames = np.asarray(frames)
    count, height, width = frames.shape[:3]
    background = np.asarray(data.BACKGROUND, np.int16)
    centroids: list[tuple[float, float] | None] = []
    colours: list[str | None] = []
    pixels = []
    yy, xx = np.mgrid[0:height, 0:width]
    for frame in frames:
        mask = np.abs(frame.astype(np.int16) - background).max(axis=2) > SHAPE_THRESHOLD
        if mask.sum() < MIN_PIXELS:
            centroids.append(None)
            colours.append(None)
            continue
        centroids.append((circular_centre(xx[mask], width), circular_centre(yy[mask], height)))
        mean = frame[mask].astype(np.float32).mean(axis=0)
        colours.append(_nearest_colour(mean))
        pixels.append(frame[mask].astype(np.float32))
    seen = [i for i, c in enumerate(centroids) if c is not None]
    size = (width, height)
    if not seen:
        return ClipReading(None, data.STATIC, 0.0, 0.0, centroids, colours, size)
    colour = _nearest_colour(np.concatenate(pixels).mean(axis=0))
    if len(seen) < 2:
        return ClipReading(colour, data.STATIC, 0.0, 1 / count, centroids, colours, size)
    t = np.asarray(seen, np.float64)
    # The path unwrapped: each centre reached from the one before by the short way round.
    points = np.asarray([centroids[i] for i in seen], np.float64)
    for axis, period in enumerate(size):
        points[:, axis] = np.unwrap(points[:, axis], period=period)
    slope_x, slope_y = (np.polyfit(t, points[:, axis], 1)[0] for axis in (0, 1))
    span = count - 1
    travel = float(np.hypot(slope_x, slope_y) * span)
    static_below = 0.25 * data.TRAVEL[0] * width / data.SIZE
    if travel < static_below:
        direction = data.STATIC
    elif abs(slope_x) >= abs(slope_y):
        direction = "right" if slope_x > 0 else "left"
    else:
        direction = "down" if slope_y > 0 else "up"
    return ClipReading(colour, direction, travel, len(seen) / count, centroids, colours, size)


def jumps(reading: ClipReading, step: float) -> list[int]:
    """Frames whose centroid moved more than JUMP_STEPS data steps since the previous frame, or
    where the shape appeared or vanished between visible neighbours."""
    out = []
    c = reading.centroids
    for i in range(1, len(c)):
        if c[i] is None or c[i - 1] is None:
            if c[i] is None and c[i - 1] is not None and i + 1 < len(c) and c[i + 1] is not None:
                out.append(i)
            continue
        if np.hypot(*reading.move(i - 1, i)) > JUMP_STEPS * step:
            out.append(i)
    return out


def forward_share(reading: ClipReading, direction: str, step: float) -> float:
    """Share of frame-to-frame moves (between visible frames) that go `direction`'s way by at least
    half a data step. A long video without jumps may still not move: a ball that hovers in place
    has no jumps, and a video that loops must come back somewhere."""
    dx, dy = data.DIRECTIONS[direction]
    c = reading.centroids
    moves = [float(np.dot(reading.move(i - 1, i), (dx, dy))) for i in range(1, len(c)) if c[i] and c[i - 1]]
    return float(np.mean([m >= 0.5 * step for m in moves])) if moves else 0.0


# --- rendering through the ordinary pipeline -------------------------------------------------------------


def demo_params(prompt: str, seed: int, **overrides: object):
    from animdiff.demo.defaults import demo_settings
    from animdiff.params import make_params

    return make_params({**demo_settings(), "prompt": prompt, "seed": seed, "formats": ["png"], **overrides})


def render(animator, prompt: str, seed: int, **overrides: object) -> np.ndarray:
    result = animator.run(demo_params(prompt, seed, **overrides), write=False)
    return np.stack([np.asarray(frame.convert("RGB")) for frame in result.frames])


def make_animator(weights: Path | None = None):
    from animdiff.demo.model import weights_dir
    from animdiff.pipeline import Animator, RunOptions

    return Animator(weights or weights_dir(), None, RunOptions(device="cpu"))


@dataclass
class Report:
    colour_accuracy: float
    direction_accuracy: float
    both_accuracy: float
    median_travel: float
    data_travel: float
    travel_ratio: float
    per_colour: dict[str, float]
    per_direction: dict[str, float]
    long_videos: list[dict]
    seconds: float


def measure(
    animator,
    colours=EVAL_COLOURS,
    directions=EVAL_DIRECTIONS,
    seeds=EVAL_SEEDS,
    shape: str = "ball",
    long_frames: int = 64,
    long_prompts: int = 4,
    long_seeds: tuple[int, ...] = (0,),
    long_overlap: int | None = None,  # None: the demo model's own (demo.defaults)
    long_closed_loop: str | None = None,  # None: the demo model's own
    long_fuse: str | None = None,  # None: the demo model's own
) -> Report:
    started = time.monotonic()
    rows = []
    for colour, direction, seed in itertools.product(colours, directions, seeds):
        reading = analyse(render(animator, data.caption(colour, shape, direction), seed))
        rows.append((colour, direction, reading))
    colour_ok = [r.colour == c for c, _, r in rows]
    direction_ok = [r.direction == d for _, d, r in rows]
    travels = [r.travel for _, _, r in rows]

    def rate(flags: list[bool]) -> float:
        return float(np.mean(flags)) if flags else 0.0

    per_colour = {
        c: rate([ok for (cc, _, _), ok in zip(rows, colour_ok, strict=True) if cc == c]) for c in colours
    }
    per_direction = {
        d: rate([ok for (_, dd, _), ok in zip(rows, direction_ok, strict=True) if dd == d])
        for d in directions
    }
    long_videos = []
    long = {"frames": long_frames, "context": LONG_CONTEXT}
    given = {"overlap": long_overlap, "closed_loop": long_closed_loop, "fuse": long_fuse}
    long.update({name: value for name, value in given.items() if value is not None})
    long_pairs = list(zip(colours, directions, strict=False))[:long_prompts]
    for (colour, direction), seed in itertools.product(long_pairs, long_seeds):
        prompt = data.caption(colour, shape, direction)
        reading = analyse(render(animator, prompt, seed, **long))
        seen = [c for c in reading.colours if c is not None]
        long_videos.append(
            {
                "prompt": prompt,
                "seed": seed,
                "frames": long_frames,
                "visible": reading.visible,
                "colour_kept": rate([c == colour for c in seen]),
                "jumps": jumps(reading, data.data_step()),
                "forward": forward_share(reading, direction, data.data_step()),
            }
        )
    data_travel = float(np.mean(data.TRAVEL))
    median_travel = float(np.median(travels))
    return Report(
        colour_accuracy=rate(colour_ok),
        direction_accuracy=rate(direction_ok),
        both_accuracy=rate([a and b for a, b in zip(colour_ok, direction_ok, strict=True)]),
        median_travel=median_travel,
        data_travel=data_travel,
        travel_ratio=median_travel / data_travel,
        per_colour=per_colour,
        per_direction=per_direction,
        long_videos=long_videos,
        seconds=time.monotonic() - started,
    )


# --- how much the network reads each word -----------------------------------------------------------------

WRONG_COLOUR = {"red": "blue", "blue": "red", "green": "yellow", "yellow": "green"}


def word_dependence(
    weights: Path | None = None,
    pairs: int = 12,
    timesteps: tuple[int, ...] = (200, 500, 800, 950),
    seed: int = 123,
    backwards: bool = False,
) -> dict[str, dict[int, float]]:
    """Mean ratio of the denoising loss with a wrong word to the loss with the right caption, per
    word ("direction": the pair's opposite direction, "colour": another colour) and timestep, over
    `pairs` training pairs (moving both ways), each noised once per timestep with one noise.

    Also "path_snr": how far the clip's own shape and path stand out of the noise at each
    timestep, for a filter that knows them (sqrt(alpha_bar) |x0 - its mean| / sqrt(1 - alpha_bar),
    in standard deviations of the noise). Where it is large the network can read the path from
    its input and never needs the words; sampling, which starts from noise with no path in it,
    then follows whatever the noise suggests.

    And "frame_order": `frame_order_spread` on the noisy clip's first frame repeated, so that only
    the positional encoding tells the frames apart. Near 0, the network hardly knows which frame
    comes first, and without that it cannot turn "right" into a path that goes right.

    With `backwards`, the pairs come from the wrapping world (`data.random_pair`'s `wrap`, the
    middle line within 2 px) and both clips get the first clip's noisy frames as input, which is
    the second clip played backwards, against the noise that leaves each real clip: what
    `train.py --focus-reverse-above` asks. Only the direction word tells the two targets apart."""
    import torch

    from animdiff.demo.model import weights_dir
    from animdiff.demo.train import (
        CaptionTokens,
        alphas_cumprod,
        clip_latents,
        frame_context,
        load_demo,
        noised,
    )

    model = load_demo(weights or weights_dir())
    network = demo_network(model)
    tokens = CaptionTokens()
    schedule = alphas_cumprod()
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)

    def encode(captions: list[str]) -> torch.Tensor:
        return frame_context(model.text_encoder, tokens, captions)

    names = ("direction", "colour", "path_snr", "frame_order")
    measures: dict[str, dict[int, list[float]]] = {name: {} for name in names}
    with torch.no_grad():
        for _ in range(pairs):
            if backwards:
                pair = data.random_pair(rng, static_share=0.0, cross_spread=2.0, wrap=True)
            else:
                pair = data.random_pair(rng, static_share=0.0)
            latents, _ = clip_latents(model.vae, pair)
            path_norms = (latents - latents.mean(dim=(2, 3, 4), keepdim=True)).flatten(1).norm(dim=1).tolist()
            right = encode([spec.caption for spec in pair])
            wrong = {
                "direction": encode([pair[1].caption, pair[0].caption]),
                "colour": encode(
                    [spec.caption.replace(spec.colour, WRONG_COLOUR[spec.colour]) for spec in pair]
                ),
            }
            for t in timesteps:
                noise = torch.randn((1, *latents.shape[1:]), generator=generator).expand_as(latents)
                a = schedule[t]
                # With `backwards` the second clip is turned round: both then show the first clip.
                turned = torch.tensor([False, backwards])
                noisy, target = noised(latents, noise, a.expand(2), torch.zeros(2, dtype=torch.bool), turned)
                steps = torch.full((2,), t)
                base = (network(noisy, steps, right) - target).pow(2).mean().item()
                measures["frame_order"].setdefault(t, []).append(
                    frame_order_spread(network, noisy, steps, right)
                )
                for word, context in wrong.items():
                    loss = (network(noisy, steps, context) - target).pow(2).mean().item()
                    measures[word].setdefault(t, []).append(loss / base)
                for norm in path_norms:
                    measures["path_snr"].setdefault(t, []).append(float((a / (1 - a)).sqrt()) * norm)
    return {word: {t: float(np.mean(v)) for t, v in by_t.items()} for word, by_t in measures.items()}


def demo_network(model: DemoModel) -> torch.nn.Module:
    """The demo model's motion UNet as training and sampling run it (the reference's GroupNorm)."""
    from diffusers import UNetMotionModel

    from animdiff.models.detect import Kind
    from animdiff.models.motion_unet import MotionUNet

    unet = UNetMotionModel.from_unet2d(model.unet, model.motion)
    return MotionUNet(unet, Kind.MM_V3, groupnorm="reference").eval()


def frame_order_spread(
    network: torch.nn.Module, noisy: torch.Tensor, steps: torch.Tensor, context: torch.Tensor
) -> float:
    """How much the noise prediction differs between frames when every input frame is the first
    one, against its size: nothing but the motion modules' positional encoding tells the frames
    apart then, so 0 means the network is blind to their order."""
    same = noisy[:, :, :1].expand_as(noisy).contiguous()
    out = network(same, steps, context)
    return float((out - out.mean(dim=2, keepdim=True)).norm() / out.norm())


def _longer_than_context(text: str) -> int:
    value = int(text)
    if value <= LONG_CONTEXT:
        raise argparse.ArgumentTypeError(
            f"must be more than the context, {LONG_CONTEXT} (a shorter video has no seams), got {value}"
        )
    return value


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more (the rates are over these seeds), got {value}")
    return value


def _demo_default(name: str) -> object:
    from animdiff.demo.defaults import DEMO_DEFAULTS

    return DEMO_DEFAULTS[name]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m animdiff.demo.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--weights", type=Path, default=None, help="models folder (default: the shipped weights)"
    )
    parser.add_argument(
        "--seeds",
        type=_at_least_one,
        default=len(EVAL_SEEDS),
        help="seeds per prompt (0, 1, ...)",
    )
    parser.add_argument("--long-prompts", type=int, default=4, help="long videos' prompts (seam jumps)")
    parser.add_argument(
        "--long-frames",
        type=_longer_than_context,
        default=64,
        help=f"frames of each long video (context {LONG_CONTEXT})",
    )
    parser.add_argument(
        "--long-seeds", type=_at_least_one, default=1, help="seeds per long-video prompt (0, 1, ...)"
    )
    parser.add_argument(
        "--overlap",
        type=int,
        default=None,
        help=f"context overlap for the long videos (-1: context // 4; default: the demo model's, "
        f"{_demo_default('overlap')})",
    )
    parser.add_argument(
        "--closed-loop",
        choices=CLOSED_LOOP_MODES,
        default=None,
        help=f"closed loop for the long videos (default: the demo model's, {_demo_default('closed_loop')})",
    )
    parser.add_argument(
        "--fuse",
        choices=FUSE_METHODS,
        default=None,
        help=f"how the long videos' windows combine (default: the demo model's, {_demo_default('fuse')})",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--word-dependence",
        action="store_true",
        help=(
            "instead: how much the denoising loss grows when the direction or colour word is wrong, how far"
            " the path stands out of the noise, and how well the network tells the frames' order"
        ),
    )
    parser.add_argument(
        "--backwards",
        action="store_true",
        help="with --word-dependence: wrapping-world pairs, both given the first clip (the second backwards)",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    if args.word_dependence:
        result = word_dependence(args.weights, backwards=args.backwards)
    else:
        report = measure(
            make_animator(args.weights),
            seeds=tuple(range(args.seeds)),
            long_prompts=args.long_prompts,
            long_frames=args.long_frames,
            long_seeds=tuple(range(args.long_seeds)),
            long_overlap=args.overlap,
            long_closed_loop=args.closed_loop,
            long_fuse=args.fuse,
        )
        result = asdict(report)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
