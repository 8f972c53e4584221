"""The A1111-compatible API: an extension client's payload as its docs show it gets its files back."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

from fastapi.testclient import TestClient
from PIL import Image

from animdiff.server.a1111 import answer_images
from server_helpers import wait_for


def payload(**animatediff: object) -> dict:
    """The shape of the extension's docs (docs/how-to-use.md), at tiny-model size."""
    args = {
        "model": "tiny-mm-v2.ckpt",
        "format": ["GIF"],
        "enable": True,
        "video_length": 8,
        "fps": 8,
        "loop_number": 0,
        "closed_loop": "R-P",
        "batch_size": 8,
        "stride": 1,
        "overlap": -1,
        "interp": "Off",
        "interp_x": 10,
        "video_source": None,
        "video_path": "",
        "latent_power": 1,
        "latent_scale": 32,
        "last_frame": None,
        "latent_power_last": 1,
        "latent_scale_last": 32,
        "request_id": "",
    }
    args.update(animatediff)
    return {
        "prompt": "1girl, yoimiya, walking",
        "negative_prompt": "bad quality",
        "seed": 7,
        "sampler_name": "DDIM",
        "steps": 2,
        "cfg_scale": 7,
        "width": 64,
        "height": 64,
        "batch_size": 1,
        "override_settings": {"sd_model_checkpoint": "tiny-sd15.safetensors [0123abcd]"},
        "alwayson_scripts": {"AnimateDiff": {"args": [args]}},
    }


def test_txt2img_returns_a_gif(client: TestClient) -> None:
    answer = client.post("/sdapi/v1/txt2img", json=payload())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["images"]) == 1
    gif = base64.b64decode(body["images"][0])
    with Image.open(io.BytesIO(gif)) as image:
        assert image.format == "GIF" and image.n_frames == 8
    info = json.loads(body["info"])
    assert info["seed"] == 7 and info["all_seeds"] == [7]
    assert info["infotexts"][0].startswith("1girl, yoimiya, walking")
    assert "AnimateDiff" in info["extra_generation_params"]
    assert "AnimateDiff.latent_power" in info["animdiff"]["ignored"]
    assert body["parameters"]["prompt"] == "1girl, yoimiya, walking"
    # the job went through the same queue
    job = client.get(f"/api/v1/jobs/{info['animdiff']['job_id']}").json()
    assert job["kind"] == "a1111" and job["status"] == "succeeded"


def test_frame_and_png_as_the_reference_returns_them(client: TestClient) -> None:
    body = client.post("/sdapi/v1/txt2img", json=payload(format=["GIF", "MP4", "PNG", "Frame"])).json()
    images = [base64.b64decode(i) for i in body["images"]]
    # GIF, MP4, then the frames; PNG frames are written on the server, not returned
    assert images[0].startswith(b"GIF8") and images[1][4:8] == b"ftyp"
    assert len(images) == 2 + 8
    assert all(i.startswith(b"\x89PNG") for i in images[2:])
    with Image.open(io.BytesIO(images[2])) as frame:
        assert frame.info["parameters"] == json.loads(body["info"])["infotexts"][0]
    job = client.get(f"/api/v1/jobs/{json.loads(body['info'])['animdiff']['job_id']}").json()
    assert sum(f["format"] == "png" for f in job["files"]) == 8
    # PNG alone: no video written, so every frame comes back
    only_png = client.post("/sdapi/v1/txt2img", json=payload(format=["PNG"])).json()
    assert len(only_png["images"]) == 8


def test_answer_order_is_gif_mp4_webp_webm_then_frames() -> None:
    files = [
        {"name": n, "format": f}
        for n, f in [
            ("a.webm", "webm"),
            ("a.webp", "webp"),
            ("frames/0.png", "frame"),
            ("a.mp4", "mp4"),
            ("a.gif", "gif"),
        ]
    ]
    assert answer_images(files) == ["a.gif", "a.mp4", "a.webp", "a.webm", "frames/0.png"]


def test_scheduler_override_and_options(client: TestClient) -> None:
    options = client.get("/sdapi/v1/options").json()
    assert options["sd_model_checkpoint"] == "tiny-sd15.safetensors"
    assert (
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "missing.safetensors"}).status_code
        == 404
    )
    assert (
        client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "../x.safetensors"}).status_code == 403
    )
    assert (
        client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 2, "sd_vae": "x"}).status_code
        == 200
    )
    assert client.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    body = payload()
    del body["override_settings"]
    body.update(sampler_name="DPM++ 2M", scheduler="Karras")
    info = json.loads(client.post("/sdapi/v1/txt2img", json=body).json()["info"])
    assert info["sampler_name"] == "DPM++ 2M Karras" and info["clip_skip"] == 2
    assert "Clip skip: 2" in info["infotexts"][0]
    body["scheduler"] = "Exponential"
    assert client.post("/sdapi/v1/txt2img", json=body).status_code == 422


def test_lists_and_png_info(client: TestClient) -> None:
    models = client.get("/sdapi/v1/sd-models").json()
    assert [m["title"] for m in models] == ["tiny-sd15.safetensors", "tiny-sdxl.safetensors"]
    assert not models[0]["filename"].startswith("/")
    samplers = [s["name"] for s in client.get("/sdapi/v1/samplers").json()]
    assert "Euler a" in samplers and "DDIM" in samplers
    body = client.post("/sdapi/v1/txt2img", json=payload(format=["GIF", "Frame"])).json()
    info = client.post("/sdapi/v1/png-info", json={"image": body["images"][1]}).json()
    assert info["info"] == json.loads(body["info"])["infotexts"][0]
    assert info["parameters"]["Seed"] == "7"
    assert info["parameters"]["AnimateDiff video_length"] == "8"
    gif_info = client.post("/sdapi/v1/png-info", json={"image": "data:image/gif;base64," + body["images"][0]})
    assert gif_info.json()["info"] == info["info"]


def test_progress_and_interrupt(client: TestClient) -> None:
    idle = client.get("/sdapi/v1/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
    answers: list = []
    slow = payload(video_length=16)
    slow["steps"] = 100
    thread = threading.Thread(target=lambda: answers.append(client.post("/sdapi/v1/txt2img", json=slow)))
    thread.start()
    seen = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        seen = client.get("/sdapi/v1/progress").json()
        if seen["state"]["sampling_step"] > 0:
            break
        time.sleep(0.01)
    assert seen["state"]["sampling_steps"] == 100 and 0 < seen["progress"] < 1
    assert seen["eta_relative"] > 0 and seen["state"]["job"].startswith("task(")
    assert client.post("/sdapi/v1/interrupt").status_code == 200
    thread.join(60)
    answer = answers[0]
    assert answer.status_code == 200
    info = json.loads(answer.json()["info"])
    assert answer.json()["images"] == [] and info["animdiff"]["status"] == "canceled"
    assert wait_for(client, info["animdiff"]["job_id"])["status"] == "canceled"


def test_force_task_id_and_request_id(client: TestClient) -> None:
    body = payload(request_id="abc")
    body["force_task_id"] = "my-task_1"
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    job = client.get("/api/v1/jobs/my-task_1").json()
    assert job["files"][0]["name"].endswith("-7-abc.gif")
    assert client.post("/sdapi/v1/txt2img", json=body).status_code == 409


def test_controlnet_unit_with_base64_image(client: TestClient) -> None:
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 200, 30)).save(png, format="PNG")
    unit = {
        "enabled": True,
        "module": "canny",
        "model": "tiny-controlnet-canny [abcdef12]",
        "weight": 0.8,
        "image": base64.b64encode(png.getvalue()).decode(),
        "resize_mode": "Crop and Resize",
        "low_vram": False,
        "processor_res": -1,
        "threshold_a": -1,
        "threshold_b": -1,
        "guidance_start": 0.0,
        "guidance_end": 1.0,
        "control_mode": 0,
        "pixel_perfect": False,
    }
    body = payload()
    body["alwayson_scripts"]["ControlNet"] = {"args": [unit, {"enabled": False, "model": "None"}]}
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    info = json.loads(answer.json()["info"])
    assert "ControlNet 0" in info["infotexts"][0] and "ControlNet.0.low_vram" in info["animdiff"]["ignored"]


def test_positional_animatediff_args(client: TestClient) -> None:
    body = payload()
    body["alwayson_scripts"] = {"animatediff": {"args": ["tiny-mm-v2.ckpt", True, 8, 8, 0, "N", 8]}}
    answer = client.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    assert "closed_loop: N" in json.loads(answer.json()["info"])["infotexts"][0]
