"""Inpaint masks: a mask folder read like A1111's img2img batch tab (reference 9.5).

White (after binarising) marks what is repainted; black is kept from the source. Per frame, in
A1111's order:

1. **binarise**: the alpha channel of an RGBA mask that has transparency, otherwise the greyscale
   (Pillow's "L" conversion); values above 128 become 255, the rest 0 (`round_mask=False`
   keeps the greys, A1111's "mask_round" off);
2. **invert** ("Inpaint not masked"), optional;
3. **blur**: a Gaussian of sigma `blur` along x, then along y, each with A1111's kernel size
   `2 * int(2.5 * sigma + 0.5) + 1` (OpenCV's `GaussianBlur`, as A1111 calls it);
4. **resize** to the generation size with the job's resize mode;
5. **latent mask** (`latent_mask`): resized to the latent size (Pillow's default bicubic on the
   RGB image, as A1111 does), scaled to [0, 1], rounded to 0/1, tiled to the 4 latent channels.

A folder holds one mask (used for every frame) or exactly one per image; any other count is an
error naming both counts, because pairing masks with frames by position would silently misalign.
The inpaint ControlNet's hint (`inpaint_hint`) is the frame in [0, 1] with masked pixels set to
-1, the convention of ControlNet v1.1 inpaint (`control_v11p_sd15_inpaint`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from animdiff.control.folder import list_frame_files
from animdiff.control.resize import ResizeMode, resize_frame
from animdiff.control.source import VideoInputError

DEFAULT_MASK_BLUR = 4.0  # A1111's img2img "Mask blur" default
BINARY_THRESHOLD = 128  # A1111's create_binary_mask: 255 if x > 128 else 0
HINT_MASKED = -1.0  # value of masked pixels in an inpaint ControlNet hint
LATENT_CHANNELS = 4

INPAINT_IMAGE_DIR = "image"
INPAINT_MASK_DIR = "mask"


def blur_kernel_size(sigma: float) -> int:
    """A1111's Gaussian kernel width for a mask blur of `sigma` pixels (odd, about 5 sigma)."""
    return 2 * int(2.5 * sigma + 0.5) + 1


def binarize_mask(image: Image.Image | np.ndarray, round_mask: bool = True) -> np.ndarray:
    """HxW uint8 mask from a mask image: alpha if it has transparency, else grey; 0/255 when rounded.

    An RGBA image whose alpha is fully opaque is read by its colours, so a white-on-black RGBA
    PNG saved by an editor means what it shows.
    """
    pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    if pil.mode == "RGBA" and pil.getextrema()[-1] != (255, 255):
        grey = pil.getchannel("A")
    else:
        grey = pil.convert("L")
    values = np.asarray(grey, dtype=np.uint8)
    if not round_mask:
        return values.copy()
    return np.where(values > BINARY_THRESHOLD, 255, 0).astype(np.uint8)


def blur_mask(mask: np.ndarray, blur_x: float, blur_y: float | None = None) -> np.ndarray:
    """Separable Gaussian blur, x then y, with A1111's kernel sizes; 0 skips that axis."""
    import cv2

    blur_y = blur_x if blur_y is None else blur_y
    out = mask
    if blur_x > 0:
        out = cv2.GaussianBlur(out, (blur_kernel_size(blur_x), 1), blur_x)
    if blur_y > 0:
        out = cv2.GaussianBlur(out, (1, blur_kernel_size(blur_y)), blur_y)
    return out


def prepare_mask(
    image: Image.Image | np.ndarray,
    size: tuple[int, int],
    resize_mode: ResizeMode | int | str = ResizeMode.JUST_RESIZE,
    *,
    invert: bool = False,
    blur: float = DEFAULT_MASK_BLUR,
    blur_y: float | None = None,
    round_mask: bool = True,
) -> np.ndarray:
    """A mask image -> HxW uint8 at the generation `size` (width, height): steps 1-4 above."""
    mask = binarize_mask(image, round_mask)
    if invert:
        mask = 255 - mask
    mask = blur_mask(mask, blur, blur_y)
    return resize_frame(mask, size, resize_mode)


def latent_mask(mask: np.ndarray, latent_h: int, latent_w: int, *, round_mask: bool = True) -> torch.Tensor:
    """(4, latent_h, latent_w) float32 in [0, 1] (0/1 when rounded), 1 = repaint.

    Resized as A1111 does: the mask as an RGB image, Pillow's default (bicubic) resampling, the
    first channel over 255, numpy's rounding (halves to even), tiled over the latent channels.
    """
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"expected an HxW uint8 mask, got {mask.dtype} {mask.shape}")
    rgb = Image.fromarray(mask).convert("RGB").resize((latent_w, latent_h), Image.Resampling.BICUBIC)
    values = np.asarray(rgb, dtype=np.float32)[:, :, 0] / 255.0
    if round_mask:
        values = np.around(values)
    return torch.from_numpy(np.ascontiguousarray(np.tile(values[None], (LATENT_CHANNELS, 1, 1))))


def latent_masks(
    masks: Sequence[np.ndarray], latent_h: int, latent_w: int, *, round_mask: bool = True
) -> torch.Tensor:
    """(frames, 4, latent_h, latent_w): `latent_mask` per frame (a repeated mask is resized once)."""
    done: dict[int, torch.Tensor] = {}
    rows = []
    for mask in masks:
        key = id(mask)
        if key not in done:
            done[key] = latent_mask(mask, latent_h, latent_w, round_mask=round_mask)
        rows.append(done[key])
    if not rows:
        raise ValueError("no masks")
    return torch.stack(rows)


def check_mask_count(mask_count: int, image_count: int, folder: Path | str) -> None:
    """One mask for every frame, or exactly one per image; anything else names both counts."""
    if mask_count == 1 or mask_count == image_count:
        return
    raise VideoInputError(
        f"mask folder {folder} has {mask_count} masks but there are {image_count} images; "
        "give one mask for every frame or exactly one mask per image"
    )


def read_mask_folder(
    folder: Path,
    image_count: int,
    size: tuple[int, int],
    resize_mode: ResizeMode | int | str = ResizeMode.JUST_RESIZE,
    *,
    frames: int | None = None,
    invert: bool = False,
    blur: float = DEFAULT_MASK_BLUR,
    blur_y: float | None = None,
    round_mask: bool = True,
) -> list[np.ndarray]:
    """The prepared masks of the first `frames` images (all `image_count` when None).

    Masks are listed like frame folders (natural order, image extensions, not recursive). One
    mask is prepared once and the same array is returned for every frame, so it costs one frame's
    memory; otherwise only the first `frames` masks are read.
    """
    files = list_frame_files(folder)
    check_mask_count(len(files), image_count, folder)
    wanted = image_count if frames is None else min(frames, image_count)

    def prepared(path: Path) -> np.ndarray:
        return prepare_mask(
            load_mask(path, folder),
            size,
            resize_mode,
            invert=invert,
            blur=blur,
            blur_y=blur_y,
            round_mask=round_mask,
        )

    if len(files) == 1:
        return [prepared(files[0])] * wanted
    return [prepared(path) for path in files[:wanted]]


def load_mask(path: Path, folder: Path | None = None) -> Image.Image:
    """A mask file as displayed (EXIF orientation applied), in its own mode: as in A1111, only an
    RGBA file's alpha is read as the mask; other modes are read by their grey values."""
    try:
        with Image.open(path) as image:
            image.load()
            oriented = ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        where = f" in mask folder {folder}" if folder is not None else ""
        raise VideoInputError(f"cannot read mask {path.name}{where}: {exc}") from exc
    return oriented


def inpaint_folders(video_path: Path) -> tuple[Path, Path] | None:
    """(image folder, mask folder) when `video_path` has both `image/` and `mask/`, else None.

    That layout asks for inpainting: the frames come from `image/`, the masks from `mask/`.
    """
    image_dir, mask_dir = video_path / INPAINT_IMAGE_DIR, video_path / INPAINT_MASK_DIR
    if image_dir.is_dir() and mask_dir.is_dir():
        return image_dir, mask_dir
    return None


def inpaint_hint(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """HxWx3 float32 hint for an inpaint ControlNet: the frame in [0, 1], -1 where masked.

    A pixel is masked where the mask is above half (> 127 of 255), the ControlNet v1.1 inpaint
    convention (`image[mask > 0.5] = -1`), so a blurred edge splits at its middle.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 frame, got {frame.dtype} {frame.shape}")
    if mask.shape != frame.shape[:2]:
        raise ValueError(f"mask {mask.shape} and frame {frame.shape[:2]} sizes differ")
    hint = frame.astype(np.float32) / 255.0
    hint[mask > 127] = HINT_MASKED
    return hint


def inpaint_hints(frames: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> np.ndarray:
    """(frames, H, W, 3) float32 hints, one frame with its mask each (equal counts)."""
    if len(frames) != len(masks):
        raise ValueError(f"{len(frames)} frames but {len(masks)} masks")
    return np.stack([inpaint_hint(f, m) for f, m in zip(frames, masks, strict=True)])
