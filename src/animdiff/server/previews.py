"""Live previews: a small picture of the latents while a job denoises, without a VAE decode.

A VAE decode per preview would cost as much as a denoising step on the device the job needs, so
the preview is a false-colour view of the latents themselves: the first three latent channels of
one frame, each stretched to its own range and scaled up. It shows composition and motion as
they form, not true colours. Previews are opt-in (`--previews`), made at most once per interval,
kept in memory (only the latest per job) and announced by a `job.preview` event; clients fetch
the picture from `/api/v1/jobs/{id}/preview` or A1111's `/sdapi/v1/progress` `current_image`.
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import torch
from PIL import Image

PREVIEW_SCALE = 4  # latent pixels -> preview pixels (the image is 8x the latents)
JPEG_QUALITY = 70


def latents_to_image(latents: torch.Tensor, frame: int = 0) -> Image.Image:
    """(frames, 4, h, w) latents -> an RGB picture of one frame (channels 0-2, each normalised)."""
    if latents.ndim != 4 or latents.shape[1] < 3:
        raise ValueError(f"expected (frames, channels>=3, h, w) latents, got {tuple(latents.shape)}")
    frame = min(max(frame, 0), latents.shape[0] - 1)
    x = latents[frame, :3].detach().float().cpu()
    low = x.amin(dim=(1, 2), keepdim=True)
    high = x.amax(dim=(1, 2), keepdim=True)
    x = (x - low) / (high - low).clamp_min(1e-6)
    rgb = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(rgb, "RGB")
    return image.resize((image.width * PREVIEW_SCALE, image.height * PREVIEW_SCALE), Image.Resampling.NEAREST)


def encode_jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


class Previews:
    """The latest preview of each running job, in memory (previews are not worth persisting)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._latest: dict[str, tuple[int, bytes]] = {}
        self._made_at: dict[str, float] = {}

    def due(self, job_id: str) -> bool:
        with self._lock:
            return time.monotonic() - self._made_at.get(job_id, -1e9) >= self.interval_s

    def put(self, job_id: str, latents: torch.Tensor) -> int:
        """Make and keep a preview; returns its number (1, 2, ...) for the job."""
        data = encode_jpeg(latents_to_image(latents))
        with self._lock:
            number = self._latest.get(job_id, (0, b""))[0] + 1
            self._latest[job_id] = (number, data)
            self._made_at[job_id] = time.monotonic()
        return number

    def get(self, job_id: str) -> tuple[int, bytes] | None:
        with self._lock:
            return self._latest.get(job_id)

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._latest.pop(job_id, None)
            self._made_at.pop(job_id, None)
