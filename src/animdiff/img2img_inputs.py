"""img2img, video to video and inpainting inputs: resolved and checked before sampling, read by the run.

`prepare_img2img` (called by `prepare`) decides where the init latents come from and checks every
file before any model loads:

- an **init image** (`init_image`, optional `last_frame`): every frame starts from it with the
  reference's latent power / latent scale blend (reference 9.4);
- else the **source frames** (`video_path` or `video_source` with a `denoising_strength`): video
  to video, one init latent per source frame; the frame count is capped by the source's frames
  as the reference's img2img batch does (1.3 step 8);
- **inpainting**: a `video_path` with `image/` and `mask/` subfolders (frames from `image/`,
  masks from `mask/`, equal counts: the issue's rule), or a `mask_path` folder (one mask for every
  frame or exactly one per source image, as the reference's batch tab). The unmasked region is
  kept from the source after every step (`sampling/inpaint.py`).

`init_latents` (called by the run) reads and VAE-encodes what the plan names, and
`inpaint_masks` reads the masks at the latent size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from animdiff.control.masks import check_mask_count, inpaint_folders, latent_masks, read_mask_folder
from animdiff.control.resize import ResizeMode
from animdiff.control.source import VideoInputError
from animdiff.params import Params


@dataclass(frozen=True)
class Img2ImgPlan:
    """Where a job's init latents (and masks) come from; plain data, probed, not read."""

    strength: float
    init_image: Path | None = None
    last_frame: Path | None = None
    source: Path | None = None  # frame folder or video file of video to video
    source_frames: int | None = None  # frames the source has
    mask_folder: Path | None = None
    mask_count: int = 0
    dedupe: bool = False  # the source's near-duplicate frames are dropped while reading

    def describe(self) -> str:
        if self.init_image is not None:
            what = f"init image {self.init_image}" + (
                f", last frame {self.last_frame}" if self.last_frame else ""
            )
        else:
            what = f"video to video from {self.source} ({self.source_frames} frames)"
        if self.mask_folder is not None:
            what += f", inpainting with masks from {self.mask_folder} ({self.mask_count})"
        return f"img2img: {what}, denoising strength {self.strength:g}"


def source_folder(params: Params) -> Path | None:
    """The frames of the shared video input: `video_path`'s `image/` in the inpaint layout."""
    if params.video_path:
        folders = inpaint_folders(Path(params.video_path).expanduser())
        return folders[0] if folders else Path(params.video_path).expanduser()
    return Path(params.video_source).expanduser() if params.video_source else None


def prepare_img2img(params: Params) -> Img2ImgPlan | None:
    """The job's img2img plan, or None for text to video; raises naming the file at fault."""
    from animdiff.control import list_frame_files, probe_video
    from animdiff.control_inputs import kept_frame_count

    layout = inpaint_folders(Path(params.video_path).expanduser()) if params.video_path else None
    if layout is not None:
        images, masks = (len(list_frame_files(folder)) for folder in layout)
        if images != masks:
            raise VideoInputError(
                f"inpainting folder {params.video_path}: {images} images in {layout[0].name}/ but {masks} "
                f"masks in {layout[1].name}/; the counts must be equal (masks are matched in order)"
            )
    mask_folder = Path(params.mask_path).expanduser() if params.mask_path else (layout[1] if layout else None)
    if not params.is_img2img and mask_folder is None:
        return None
    if mask_folder is not None and not mask_folder.is_dir():
        raise VideoInputError(f"mask folder {mask_folder} does not exist or is not a folder")
    mask_count = len(list_frame_files(mask_folder)) if mask_folder is not None else 0
    if params.init_image:
        init = _image(params.init_image, "init image")
        last = _image(params.last_frame, "last frame") if params.last_frame else None
        if mask_folder is not None:
            check_mask_count(mask_count, 1, mask_folder)
        return Img2ImgPlan(params.strength, init, last, mask_folder=mask_folder, mask_count=mask_count)
    source = source_folder(params)
    if source is None:  # a mask folder alone: Params refuses it, kept for direct callers
        raise VideoInputError("inpainting needs an init image, a video source or a video path")
    info = probe_video(source)
    if params.video_dedupe and layout is not None:
        raise VideoInputError("video_dedupe with an image/ + mask/ folder: masks are matched by position")
    count = kept_frame_count(info.path) if params.video_dedupe else info.frame_count
    if mask_folder is not None:
        check_mask_count(mask_count, count, mask_folder)
    return Img2ImgPlan(
        params.strength,
        source=info.path,
        source_frames=count,
        mask_folder=mask_folder,
        mask_count=mask_count,
        dedupe=params.video_dedupe,
    )


def _image(given: str, what: str) -> Path:
    from PIL import Image, UnidentifiedImageError

    path = Path(given).expanduser()
    if not path.is_file():
        raise VideoInputError(f"{what} {path} " + ("is a folder" if path.is_dir() else "does not exist"))
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise VideoInputError(f"{what} {path} cannot be read ({exc})") from exc
    return path


def init_frames(plan: Img2ImgPlan, count: int, width: int, height: int) -> list[np.ndarray]:
    """The frames to encode: the init image once, or the source's first `count` frames."""
    from animdiff.control import REFERENCE_DECIMATE, read_video_frames, resize_frame
    from animdiff.control.folder import load_image

    size = (width, height)
    if plan.init_image is not None:
        return [resize_frame(load_image(plan.init_image), size, ResizeMode.JUST_RESIZE, fill="median")]
    assert plan.source is not None
    frames = read_video_frames(plan.source, count, size, decimate=REFERENCE_DECIMATE if plan.dedupe else None)
    if len(frames) < count:
        raise VideoInputError(f"{plan.source} gave {len(frames)} frames, {count} were needed")
    return frames


def last_frame(plan: Img2ImgPlan, width: int, height: int) -> np.ndarray | None:
    from animdiff.control import resize_frame
    from animdiff.control.folder import load_image

    if plan.last_frame is None:
        return None
    return resize_frame(load_image(plan.last_frame), (width, height), ResizeMode.JUST_RESIZE, fill="median")


def inpaint_masks(plan: Img2ImgPlan, count: int, width: int, height: int) -> torch.Tensor | None:
    """(count, 4, height/8, width/8) latent masks (1 = repaint), or None without a mask folder."""
    if plan.mask_folder is None:
        return None
    images = plan.source_frames if plan.source_frames is not None else 1
    masks = read_mask_folder(plan.mask_folder, images, (width, height), frames=count)
    if len(masks) < count:  # one mask per image of an init image: repeat it
        masks = masks + [masks[-1]] * (count - len(masks))
    return latent_masks(masks, height // 8, width // 8)
