"""The UI's form covers every setting, from the settings model, and its helper endpoints work."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animdiff.control import PREPROCESSORS
from animdiff.control_units import ControlNetUnit
from animdiff.params import Params
from animdiff.server.ui import LAYOUT, ui_schema

STATIC = Path(__file__).parents[2] / "src" / "animdiff" / "server" / "ui" / "static"
# The reference extension's labels (reference-facts.md) for the seed system's settings.
REFERENCE_LABELS = {
    "motion_module": "Motion module",
    "formats": "Save format",
    "frames": "Number of frames",
    "fps": "FPS",
    "loop_number": "Display loop number",
    "context": "Context batch size",
    "closed_loop": "Closed loop",
    "stride": "Stride",
    "overlap": "Overlap",
    "interp": "Frame Interpolation",
    "interp_x": "Interp X",
    "video_source": "Video source",
    "video_path": "Video path",
}
WIDGETS = {
    "text",
    "textarea",
    "number",
    "slider",
    "select",
    "checkbox",
    "formats",
    "model",
    "upload",
    "motion_loras",
    "controlnet_units",
}


def test_every_settings_field_has_a_placed_control():
    """A new field of Params without a place (group, label, widget) in the UI fails here."""
    placed = [field for _, field, _, _ in LAYOUT]
    assert len(placed) == len(set(placed)), "a field is placed twice"
    missing = set(Params.model_fields) - set(placed)
    assert not missing, f"settings without a UI control: {sorted(missing)}; add them to ui.routes.LAYOUT"
    assert not set(placed) - set(Params.model_fields), "LAYOUT names fields the settings model lacks"
    served = {f["name"]: f for f in ui_schema()["fields"]}
    assert set(served) == set(Params.model_fields)
    assert all(f["group"] != "Other" for f in served.values())
    assert all(f["widget"] in WIDGETS for f in served.values())
    # The page builds a control of each widget kind the schema names.
    script = (STATIC / "app.js").read_text()
    for widget in WIDGETS - {"text"}:
        assert f'"{widget}"' in script, widget


def test_labels_and_groups_are_the_references():
    served = {f["name"]: f for f in ui_schema()["fields"]}
    for name, label in REFERENCE_LABELS.items():
        assert served[name]["label"] == label
        assert served[name]["group"] == "AnimateDiff"
    assert served["cfg_scale"]["label"] == "CFG Scale"
    assert served["sampler"]["label"] == "Sampling method"
    assert served["checkpoint"]["label"] == "Stable Diffusion checkpoint"


def test_defaults_ranges_and_tooltips_come_from_the_settings_model():
    served = {f["name"]: f for f in ui_schema()["fields"]}
    for name, info in Params.model_fields.items():
        entry = served[name]
        assert entry["description"] == info.description, name
        if not info.is_required() and info.default_factory is None:
            assert entry["default"] == info.default, name
    for name, prop in Params.model_json_schema()["properties"].items():
        for key in ("minimum", "maximum"):
            if key in prop:
                assert served[name][key] == prop[key], (name, key)
    assert (served["cfg_scale"]["minimum"], served["cfg_scale"]["maximum"]) == (1.0, 30.0)
    assert served["closed_loop"]["choices"] == ["N", "R-P", "R+P", "A"]
    assert served["interp"]["choices"] == ["Off", "FILM"]
    assert served["fps"]["nullable"] and served["fps"]["maximum"] == 240
    assert served["formats"]["default"] == ["gif", "png"]
    assert "DDIM" in served["sampler"]["choices"]
    units = served["controlnet_units"]["item_fields"]
    assert set(units) == set(ControlNetUnit.model_fields)
    assert units["weight"]["maximum"] == 2.0
    assert set(served["controlnet_units"]["labels"]) == set(ControlNetUnit.model_fields)
    names = [p["name"] for p in ui_schema()["preprocessors"]]
    assert names == list(PREPROCESSORS)


def test_page_and_assets_are_served_without_a_cdn(ui_client):
    page = ui_client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert asset.startswith("/ui/static/"), asset
        assert ui_client.get(asset).status_code == 200
    for path in STATIC.iterdir():
        assert "http://" not in path.read_text() and "https://" not in path.read_text(), path.name
    assert ui_client.get("/ui/static/..%2Fapp.py").status_code == 404
    assert ui_client.get("/ui/static/nothing.js").status_code == 404
    schema = ui_client.get("/api/v1/ui/schema").json()
    assert schema["limits"]["max_frames"] == 256


def test_token_counter_per_chunk_and_per_keyframe(ui_client):
    def count(text):
        answer = ui_client.post("/api/v1/ui/tokens", json={"text": text})
        assert answer.status_code == 200, answer.text
        return answer.json()

    one = count("a photo of a cat")
    assert one["count"] == 5 and one["parts"][0]["chunks"] == [5] and one["limit"] == 75
    assert not one["travel"]
    long = count(", ".join(["red apple"] * 40))  # 119 tokens: two chunks (cut after a comma)
    assert len(long["parts"][0]["chunks"]) == 2 and long["limit"] == 150
    assert sum(long["parts"][0]["chunks"]) == 119
    lora = count("a cat <lora:style:0.8>")
    assert lora["count"] == 2 and lora["loras"] == ["style"]
    travel = count("best quality\n0: a cat\n8: a very big dog")
    assert travel["travel"] and [p["frame"] for p in travel["parts"]] == [0, 8]
    assert travel["parts"][0]["count"] < travel["parts"][1]["count"]
    broken = count("0: a cat\n8:a dog")
    assert broken["error"] and "line 2" in broken["error"]
    assert count("")["parts"][0]["chunks"] == [0]


def test_preprocessor_preview(ui_client):
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 255
    data = io.BytesIO()
    Image.fromarray(image).save(data, format="PNG")
    files = {"image": ("square.png", data.getvalue(), "image/png")}
    answer = ui_client.post("/api/v1/ui/preprocess", files=files, data={"module": "invert"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    hint = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))
    assert hint.shape == (64, 64, 3) and hint[0, 0, 0] == 255 and hint[32, 32, 0] == 0
    canny = ui_client.post(
        "/api/v1/ui/preprocess", files=files, data={"module": "canny", "threshold_a": 50, "threshold_b": 100}
    )
    assert canny.status_code == 200
    bad = ui_client.post("/api/v1/ui/preprocess", files=files, data={"module": "nope"})
    assert bad.status_code == 422 and "nope" in bad.json()["detail"]
    junk = {"image": ("x.png", b"not an image", "image/png")}
    assert ui_client.post("/api/v1/ui/preprocess", files=junk, data={"module": "none"}).status_code == 422


INFOTEXT = (
    "0: a corgi sitting\n8: a corgi jumping\n"
    "Negative prompt: blurry\n"
    "Steps: 7, Sampler: Euler a, CFG scale: 5.5, Seed: 1234, Size: 64x72, "
    'AnimateDiff: "model: tiny-mm-v2.ckpt, video_length: 16, fps: 12, loop_number: 0, '
    'closed_loop: N, batch_size: 8, stride: 1, overlap: -1, interp: Off, interp_x: 10"'
)


def test_infotext_from_text_and_from_a_result_file(ui_client):
    answer = ui_client.post("/api/v1/ui/infotext", json={"text": INFOTEXT})
    assert answer.status_code == 200, answer.text
    params = answer.json()["params"]
    assert params["steps"] == 7 and params["cfg_scale"] == 5.5 and params["seed"] == 1234
    assert params["width"] == 64 and params["height"] == 72
    assert params["frames"] == 16 and params["context"] == 8 and params["fps"] == 12
    assert params["prompt"].startswith("0: a corgi sitting")
    # A GIF that carries it as its comment (where animdiff and the reference write it).
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF", comment=INFOTEXT.encode())
    dropped = ui_client.post(
        "/api/v1/ui/infotext/file", files={"file": ("x.gif", gif.getvalue(), "image/gif")}
    )
    assert dropped.status_code == 200, dropped.text
    assert dropped.json()["params"]["steps"] == 7
    empty = io.BytesIO()
    Image.new("RGB", (8, 8)).save(empty, format="PNG")
    none = ui_client.post(
        "/api/v1/ui/infotext/file", files={"file": ("e.png", empty.getvalue(), "image/png")}
    )
    assert none.status_code == 422 and "e.png" in none.json()["detail"] and "/tmp" not in none.text
    odd = ui_client.post("/api/v1/ui/infotext/file", files={"file": ("x.exe", b"MZ", "application/x")})
    assert odd.status_code == 415


@pytest.mark.parametrize("text", ["", "just a prompt"])
def test_infotext_without_parameters(ui_client, text):
    answer = ui_client.post("/api/v1/ui/infotext", json={"text": text})
    assert answer.status_code in (200, 422)
    if answer.status_code == 200:
        assert answer.json()["params"]["prompt"] == text


def test_page_on_a_server_with_an_api_key(settings_factory, animator):
    from fastapi.testclient import TestClient

    from animdiff.server.app import create_app

    with TestClient(create_app(settings_factory(api_keys=("s3cret",)), animators=[animator])) as client:
        assert client.get("/").status_code == 401
        page = client.get("/?api_key=s3cret")
        assert page.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(a.endswith("?api_key=s3cret") for a in assets)
        for asset in assets:
            assert client.get(asset).status_code == 200
        assert client.get("/api/v1/ui/schema", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert client.get("/api/v1/ui/schema").status_code == 401
