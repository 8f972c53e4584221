"""The demo model's world: coloured shapes on a plain background, moving in one direction.

Clips are drawn procedurally (nothing to download) and the caption says everything that varies
on purpose: "a red ball moving right", "a static blue square". The motion is a strong, simple
cue: a moving shape enters near one edge and crosses most of the frame, so the start position
alone already tells the direction, and the text decides the layout of the whole clip.

Clips come in *pairs* that differ only in the caption's direction (the same colour, shape, size,
cross-axis position and speed, moving opposite ways, or one of them static), trained on the same
noise and timestep, so that the direction word is the only thing that tells the two apart. (That
alone was not enough for the model to learn it in CPU minutes; `cross_spread`, which stage 3 of
train.py uses, is what made it: see the README's demo section.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 64
FRAMES = 16
BACKGROUND = (128, 128, 128)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 70, 230),
    "yellow": (230, 210, 40),
}
SHAPES = ("ball", "square")
#: Unit steps in image coordinates (y grows downwards, so "up" is negative y).
DIRECTIONS: dict[str, tuple[int, int]] = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}
STATIC = "static"
OPPOSITE = {"right": "left", "left": "right", "up": "down", "down": "up"}
#: Shape radius (half the square's side), pixels at 64x64.
RADIUS = (6.0, 8.0)
#: Distance travelled over the clip, pixels at 64x64; the data's per-frame step follows from it.
TRAVEL = (30.0, 38.0)
#: How far past the entry margin a moving shape may start, pixels.
START_JITTER = 6.0


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides one clip's pixels."""

    colour: str
    shape: str
    direction: str  # one of DIRECTIONS or STATIC
    radius: float
    start: tuple[float, float]  # centre (x, y) in the first frame, pixels
    step: float  # pixels per frame along the direction (0 when static)
    #: The world wraps around at the borders (a shape leaving on one side comes in on the other).
    wrap: bool = False

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.direction)

    def centre(self, frame: int, frames: int = FRAMES, size: int = SIZE) -> tuple[float, float]:
        dx, dy = DIRECTIONS.get(self.direction, (0, 0))
        scale = size / SIZE
        step = self.step * (FRAMES - 1) / max(frames - 1, 1)
        return (
            (self.start[0] + dx * step * frame) * scale,
            (self.start[1] + dy * step * frame) * scale,
        )


def caption(colour: str, shape: str, direction: str) -> str:
    if direction == STATIC:
        return f"a static {colour} {shape}"
    return f"a {colour} {shape} moving {direction}"


def _start(direction: str, radius: float, travel: float, jitter: float, cross: float) -> tuple[float, float]:
    """Entry position for a moving shape: near the edge it comes from, `cross` on the other axis."""
    near = radius + 1 + jitter
    far = SIZE - near
    along = {"right": near, "left": far, "down": near, "up": far}[direction]
    return (along, cross) if direction in ("right", "left") else (cross, along)


def _wrapped_start(direction: str, middle: float, cross: float, travel: float) -> tuple[float, float]:
    """First-frame centre of a path that passes `middle` half way through the clip."""
    dx, dy = DIRECTIONS[direction]
    along = middle - (dx + dy) * travel / 2
    return (along, cross) if dx else (cross, along)


def random_pair(
    rng: np.random.Generator,
    static_share: float = 0.15,
    cross_spread: float | None = None,
    wrap: bool = False,
) -> tuple[ClipSpec, ClipSpec]:
    """Two clips differing only in direction: opposite ways, or one moving and one static.

    `cross_spread`: the moving shapes cross within this many pixels of the frame's middle line
    (None: anywhere they fit). `wrap`: a world that wraps around at the borders, where a moving
    pair's path may be anywhere along its axis and its two shapes pass the same point half way
    through, so each clip is the other played backwards, and any 16 frames of a long path are a
    clip of this world (the ordinary world's clips always start at an edge)."""
    colour = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    radius = float(rng.uniform(*RADIUS))
    travel = float(rng.uniform(*TRAVEL))
    jitter = float(rng.uniform(0, START_JITTER))
    if cross_spread is None:
        cross = float(rng.uniform(radius + 1, SIZE - radius - 1))
    else:
        cross = SIZE / 2 + float(rng.uniform(-cross_spread, cross_spread))
    direction = str(rng.choice(list(DIRECTIONS)))
    step = travel / (FRAMES - 1)
    if wrap:
        middle = float(rng.uniform(0, SIZE))
        first, second = (
            ClipSpec(colour, shape, way, radius, _wrapped_start(way, middle, cross, travel), step, wrap=True)
            for way in (direction, OPPOSITE[direction])
        )
        if rng.random() < static_share:
            second = ClipSpec(colour, shape, STATIC, radius, first.centre((FRAMES - 1) / 2), 0.0, wrap=True)
        return first, second
    first = ClipSpec(colour, shape, direction, radius, _start(direction, radius, travel, jitter, cross), step)
    if rng.random() < static_share:
        spot = (
            float(rng.uniform(radius + 1, SIZE - radius - 1)),
            float(rng.uniform(radius + 1, SIZE - radius - 1)),
        )
        second = ClipSpec(colour, shape, STATIC, radius, spot, 0.0)
    else:
        other = OPPOSITE[direction]
        second = ClipSpec(colour, shape, other, radius, _start(other, radius, travel, jitter, cross), step)
    return first, second


def render(spec: ClipSpec, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """The clip as float32 (frames, 3, size, size) in [-1, 1], anti-aliased edges."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    colour = np.asarray(COLOURS[spec.colour], np.float32) / 127.5 - 1
    background = np.asarray(BACKGROUND, np.float32) / 127.5 - 1
    radius = spec.radius * size / SIZE
    out = np.empty((frames, 3, size, size), np.float32)
    for f in range(frames):
        cx, cy = spec.centre(f, frames, size)
        ox, oy = xx - cx, yy - cy
        if spec.wrap:  # the offset to the nearest copy of the centre on the torus
            ox, oy = ((o + size / 2) % size - size / 2 for o in (ox, oy))
        ball = spec.shape == "ball"
        distance = np.sqrt(ox**2 + oy**2) if ball else np.maximum(np.abs(ox), np.abs(oy))
        cover = np.clip(radius + 0.5 - distance, 0, 1)[None]
        out[f] = background[:, None, None] * (1 - cover) + colour[:, None, None] * cover
    return out


def data_step(frames: int = FRAMES) -> float:
    """The data's mean per-frame step in pixels at 64x64 (the evaluator's unit for "a jump")."""
    return float(np.mean(TRAVEL)) / (frames - 1)
