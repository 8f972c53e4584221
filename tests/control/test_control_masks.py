"""Inpaint masks (reference 9.5): binarise, invert, blur, resize, latent masks, folders, hints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from animdiff.control.masks import (
    HINT_MASKED,
    binarize_mask,
    blur_kernel_size,
    blur_mask,
    check_mask_count,
    inpaint_folders,
    inpaint_hint,
    inpaint_hints,
    latent_mask,
    latent_masks,
    prepare_mask,
    read_mask_folder,
)
from animdiff.control.source import VideoInputError


def _half_mask(height: int = 64, width: int = 64) -> np.ndarray:
    """Right half white (repaint), left half black (keep)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[:, width // 2 :] = 255
    return mask


def _write(folder: Path, name: str, array: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(folder / name)


def test_kernel_size_is_a1111s() -> None:
    assert blur_kernel_size(4) == 21
    assert blur_kernel_size(0.5) == 3
    assert blur_kernel_size(1) == 7
    assert blur_kernel_size(2.3) == 13


def test_binarize_threshold_and_sources() -> None:
    grey = np.array([[0, 128, 129, 255]], dtype=np.uint8)
    assert binarize_mask(grey).tolist() == [[0, 0, 255, 255]]
    assert binarize_mask(grey, round_mask=False).tolist() == [[0, 128, 129, 255]]
    # RGB goes through Pillow's grey conversion (pure red is 76: kept).
    rgb = np.array([[[255, 0, 0], [255, 255, 255]]], dtype=np.uint8)
    assert binarize_mask(rgb).tolist() == [[0, 255]]
    # RGBA with transparency: the alpha is the mask, whatever the colours.
    rgba = np.zeros((1, 2, 4), dtype=np.uint8)
    rgba[0, 1, 3] = 255
    assert binarize_mask(rgba).tolist() == [[0, 255]]
    # Fully opaque RGBA: read by its colours.
    opaque = np.full((1, 2, 4), 255, dtype=np.uint8)
    opaque[0, 0, :3] = 0
    assert binarize_mask(opaque).tolist() == [[0, 255]]


def test_blur_spreads_along_each_axis_within_the_kernel() -> None:
    import cv2

    mask = np.zeros((41, 41), dtype=np.uint8)
    mask[20, 20] = 255
    mask[:, 30] = 255
    only_x = blur_mask(mask, 2, 0)
    assert np.array_equal(only_x, cv2.GaussianBlur(mask, (11, 1), 2))
    rows = np.nonzero(only_x.any(axis=1))[0]
    assert set(rows) == {i for i in range(41) if mask[i].any()}  # nothing moved vertically
    cols = np.nonzero(only_x[20])[0]
    assert cols.min() >= 20 - 5 and cols.max() <= 30 + 5 and len(cols) > 2
    both = blur_mask(mask, 2)
    assert np.array_equal(both, cv2.GaussianBlur(cv2.GaussianBlur(mask, (11, 1), 2), (1, 11), 2))
    assert np.array_equal(blur_mask(mask, 0), mask)


def test_prepare_mask_order_and_size() -> None:
    mask = _half_mask(32, 48)
    plain = prepare_mask(mask, (24, 16), blur=0)
    assert plain.shape == (16, 24)
    assert plain[:, :8].max() == 0 and plain[:, 16:].min() == 255  # Lanczos rings next to the edge
    inverted = prepare_mask(mask, (24, 16), invert=True, blur=0)
    assert inverted[:, :8].min() == 255 and inverted[:, 16:].max() == 0
    blurred = prepare_mask(mask, (48, 32), blur=4)
    assert blurred.shape == (32, 48)
    edge = blurred[16]
    assert 0 < edge[23] < 255 and 0 < edge[24] < 255  # the step is now a ramp
    assert edge[0] == 0 and edge[-1] == 255


def test_latent_mask_is_a1111s_resize_round_and_tile() -> None:
    rng = np.random.default_rng(3)
    mask = prepare_mask(rng.integers(0, 256, (64, 80), dtype=np.uint8), (80, 64), blur=3)
    out = latent_mask(mask, 8, 10)
    assert out.shape == (4, 8, 10) and out.dtype == torch.float32
    # A1111: RGB image, Pillow's default resize, first channel / 255, np.around, tile to 4.
    reference = np.asarray(Image.fromarray(mask).convert("RGB").resize((10, 8)), dtype=np.float32)
    expected = np.around(reference[:, :, 0] / 255.0)
    for channel in range(4):
        assert np.array_equal(out[channel].numpy(), expected)
    assert set(np.unique(out.numpy())) <= {0.0, 1.0}
    soft = latent_mask(mask, 8, 10, round_mask=False)
    assert torch.allclose(soft[0], torch.from_numpy(reference[:, :, 0] / 255.0))
    half = latent_mask(_half_mask(), 8, 8)
    assert torch.all(half[:, :, :3] == 0) and torch.all(half[:, :, 5:] == 1)
    with pytest.raises(ValueError, match="HxW uint8"):
        latent_mask(np.zeros((4, 4, 3), dtype=np.uint8), 2, 2)


def test_latent_masks_stack_and_reuse() -> None:
    one = _half_mask()
    other = 255 - one
    out = latent_masks([one, one, other], 8, 8)
    assert out.shape == (3, 4, 8, 8)
    assert torch.equal(out[0], out[1]) and torch.equal(out[2], 1 - out[0])


def test_mask_count_rule_names_both_counts(tmp_path: Path) -> None:
    check_mask_count(1, 7, tmp_path)
    check_mask_count(7, 7, tmp_path)
    with pytest.raises(VideoInputError, match=r"has 3 masks but there are 5 images"):
        check_mask_count(3, 5, tmp_path)


def test_read_mask_folder_single_mask_for_every_frame(tmp_path: Path) -> None:
    _write(tmp_path / "masks", "only.png", _half_mask(32, 32))
    masks = read_mask_folder(tmp_path / "masks", 5, (16, 16), blur=0)
    assert len(masks) == 5 and all(m is masks[0] for m in masks)
    assert masks[0].shape == (16, 16)
    assert len(read_mask_folder(tmp_path / "masks", 5, (16, 16), frames=3, blur=0)) == 3


def test_read_mask_folder_one_per_image_in_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "masks"
    for index in (1, 2, 10):  # "10.png" sorts after "2.png"
        mask = np.zeros((16, 16), dtype=np.uint8)
        mask[:, :index] = 255
        _write(folder, f"{index}.png", mask)
    masks = read_mask_folder(folder, 3, (16, 16), blur=0, invert=False)
    assert [int((m[0] == 255).sum()) for m in masks] == [1, 2, 10]
    assert len(read_mask_folder(folder, 3, (16, 16), frames=2, blur=0)) == 2
    with pytest.raises(VideoInputError, match=r"has 3 masks but there are 4 images"):
        read_mask_folder(folder, 4, (16, 16))
    (folder / "broken.png").write_bytes(b"not an image")
    with pytest.raises(VideoInputError, match=r"broken\.png"):
        read_mask_folder(folder, 4, (16, 16))


def test_read_mask_folder_uses_alpha_of_transparent_masks(tmp_path: Path) -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[:, 8:, 3] = 255  # opaque right half: repaint; colours all black
    _write(tmp_path / "m", "0.png", rgba)
    (mask,) = read_mask_folder(tmp_path / "m", 1, (16, 16), blur=0)
    assert mask[:, :8].max() == 0 and mask[:, 8:].min() == 255


def test_inpaint_folders(tmp_path: Path) -> None:
    assert inpaint_folders(tmp_path) is None
    (tmp_path / "image").mkdir()
    assert inpaint_folders(tmp_path) is None
    (tmp_path / "mask").mkdir()
    assert inpaint_folders(tmp_path) == (tmp_path / "image", tmp_path / "mask")


def test_inpaint_hint_marks_masked_pixels() -> None:
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    mask = np.zeros((8, 12), dtype=np.uint8)
    mask[:, 6:] = 255
    mask[0, 0] = 127  # below half: kept
    mask[1, 0] = 128  # above half: masked
    hint = inpaint_hint(frame, mask)
    assert hint.dtype == np.float32 and hint.shape == (8, 12, 3)
    assert np.all(hint[:, 6:] == HINT_MASKED) and np.all(hint[1, 0] == HINT_MASKED)
    keep = mask <= 127
    assert np.allclose(hint[keep], frame[keep] / 255.0)
    hints = inpaint_hints([frame, frame], [mask, 255 - mask])
    assert hints.shape == (2, 8, 12, 3)
    assert np.all(hints[1][:, :6][keep[:, :6]] == HINT_MASKED)
    with pytest.raises(ValueError, match="sizes differ"):
        inpaint_hint(frame, mask[:4])
    with pytest.raises(ValueError, match="2 frames but 1 masks"):
        inpaint_hints([frame, frame], [mask])
