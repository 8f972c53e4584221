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
