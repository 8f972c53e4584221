"""/sdapi/v1/img2img: init_images, mask and denoising_strength mapped onto the img2img settings."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from test_a1111 import payload


def png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def picture() -> np.ndarray:
    y, x = np.mgrid[0:64, 0:64]
    return np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)


def test_img2img_returns_a_gif(client: TestClient) -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255
    body = {
        **payload(latent_power=2, latent_scale=16),
        "init_images": [png_base64(picture())],
        "mask": png_base64(mask),
        "denoising_strength": 0.5,
    }
    answer = client.post("/sdapi/v1/img2img", json=body)
    assert answer.status_code == 200, answer.text
    gif = base64.b64decode(answer.json()["images"][0])
    with Image.open(io.BytesIO(gif)) as image:
        assert image.format == "GIF" and image.n_frames == 8
    info = json.loads(answer.json()["info"])
    text = info["infotexts"][0]
    assert "Denoising strength: 0.5" in text
    assert "latent_power: 2" in text and "latent_scale: 16" in text
    assert not any("latent" in key for key in info["animdiff"]["ignored"])


def test_img2img_without_init_images_is_a_422(client: TestClient) -> None:
    answer = client.post("/sdapi/v1/img2img", json=payload())
    assert answer.status_code == 422
    assert "init_images" in answer.text


# --- the mask fields (no sampling: the translation, then the masks as the job reads them) ------------


def translated(tmp_path, mask: np.ndarray, **fields: object) -> tuple[np.ndarray, list[str]]:
    """The job's prepared mask at 64x64 (binarised, blurred as A1111) and the ignored keys."""
    from animdiff.control.masks import read_mask_folder
    from animdiff.server.a1111_payload import A1111Request, translate

    body = {**payload(), "init_images": [png_base64(picture())], "mask": png_base64(mask), **fields}
    values, ignored = translate(A1111Request(**body), {}, tmp_path, img2img=True)
    (prepared,) = read_mask_folder(tmp_path.parent / values["mask_path"], 1, (64, 64))
    return prepared, ignored


def left_half() -> np.ndarray:
    mask = np.zeros((64, 64), np.uint8)
    mask[:, :32] = 255
    return mask


def test_inpainting_mask_invert_paints_the_other_side(tmp_path) -> None:
    plain, ignored = translated(tmp_path, left_half())
    assert plain[10, 5] == 255 and plain[10, 60] == 0 and "inpainting_mask_invert" not in ignored
    inverted, ignored = translated(tmp_path, left_half(), inpainting_mask_invert=1)
    assert inverted[10, 5] == 0 and inverted[10, 60] == 255 and "inpainting_mask_invert" not in ignored
    # Binarised before it is inverted (A1111's order): grey 100 is "keep", so inverted it is painted.
    grey = np.full((64, 64), 100, np.uint8)
    assert translated(tmp_path, grey, inpainting_mask_invert=1)[0].min() == 255
    same, _ = translated(tmp_path, left_half(), inpainting_mask_invert=0)
    np.testing.assert_array_equal(same, plain)


def test_mask_fields_at_the_values_used_are_not_reported(tmp_path) -> None:
    from animdiff.control.masks import blur_mask

    used = {"mask_blur": 4, "mask_blur_x": 4, "mask_blur_y": 4, "mask_round": True, "inpainting_fill": 1}
    prepared, ignored = translated(tmp_path, left_half(), **used)
    assert not set(used) & set(ignored)
    np.testing.assert_array_equal(prepared, blur_mask(left_half(), 4))  # A1111's default blur
    others = {"mask_blur": 8, "mask_round": False, "inpainting_fill": 2}
    _, ignored = translated(tmp_path, left_half(), **others)
    assert set(others) <= set(ignored)


def test_a_bad_mask_invert_is_422(client: TestClient) -> None:
    body = {**payload(), "init_images": [png_base64(picture())], "mask": png_base64(left_half())}
    answer = client.post("/sdapi/v1/img2img", json={**body, "inpainting_mask_invert": 2})
    assert answer.status_code == 422 and "inpainting_mask_invert must be 0 or 1" in answer.text


def test_a_model_preprocessor_without_its_weights_is_a_4xx_at_submission(make_client) -> None:
    client = make_client(start_workers=False)
    unit = {
        "model": "tiny-controlnet-canny.safetensors",
        "module": "softedge_hed",
        "image": png_base64(picture()),
    }
    body = {
        **payload(),
        "alwayson_scripts": {**payload()["alwayson_scripts"], "ControlNet": {"args": [unit]}},
    }
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    detail = answer.json()["detail"]
    assert "preprocessor 'softedge_hed' needs a model" in detail
    assert "ControlNetHED.pth" in detail or "animdiff[annotators]" in detail
    assert client.get("/api/v1/jobs").json()["total"] == 0
