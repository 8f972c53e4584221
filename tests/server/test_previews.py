"""Live previews from latents: the picture, and the worker path (denoising events carry latents)."""

from __future__ import annotations

import base64
import io

import torch
from PIL import Image

from animdiff.pipeline import Progress
from animdiff.server.previews import PREVIEW_SCALE, latents_to_image
from server_helpers import tiny_job, wait_for


def test_latents_to_image_stretches_each_channel() -> None:
    latents = torch.zeros(2, 4, 8, 6)
    latents[0, 0, :, :3] = 5.0  # left half bright in red
    image = latents_to_image(latents)
    assert image.size == (6 * PREVIEW_SCALE, 8 * PREVIEW_SCALE) and image.mode == "RGB"
    assert image.getpixel((0, 0))[0] == 255 and image.getpixel((image.width - 1, 0))[0] == 0
    assert latents_to_image(latents, frame=9).size == image.size  # clamped to the last frame


def test_worker_publishes_previews_from_the_denoising_latents(make_client, animator, monkeypatch) -> None:
    original = animator.execute
    seen: list[bytes] = []

    def execute(job, progress=None, cancel=None):
        def forward(event: Progress) -> None:
            if event.phase == "denoise" and event.windows == 0 and event.step > 0:
                assert event.latents is not None  # the pipeline hands its latents to the previews
            progress(event)
            if event.phase == "denoise" and event.step == 1 and event.windows == 0:
                progress_answer = client.get("/sdapi/v1/progress").json()
                if progress_answer["current_image"]:
                    seen.append(base64.b64decode(progress_answer["current_image"]))

        return original(job, progress=forward, cancel=cancel)

    monkeypatch.setattr(animator, "execute", execute)
    client = make_client(previews=True, preview_interval_s=0.0)
    job_id = client.post("/api/v1/jobs", json=tiny_job(steps=3)).json()["id"]
    assert wait_for(client, job_id)["status"] == "succeeded"
    previews = [
        e for e in client.get(f"/api/v1/jobs/{job_id}/events/list").json() if e["type"] == "job.preview"
    ]
    assert [e["preview"] for e in previews] == [1, 2, 3]
    assert previews[0]["url"] == f"/api/v1/jobs/{job_id}/preview"
    assert seen and Image.open(io.BytesIO(seen[0])).format == "JPEG"
    assert client.get(f"/api/v1/jobs/{job_id}/preview").status_code == 404  # dropped when the job ended


def test_previews_off_by_default(client) -> None:
    job_id = client.post("/api/v1/jobs", json=tiny_job()).json()["id"]
    wait_for(client, job_id)
    answer = client.get(f"/api/v1/jobs/{job_id}/preview")
    assert answer.status_code == 404 and "--previews" in answer.json()["detail"]
