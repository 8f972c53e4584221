"""The web UI in a real browser: Playwright driving Debian's chromium against the app on tiny models.

Skipped, with the reason, where chromium or playwright is missing (`apt-get install chromium`,
`pip install playwright`; never `playwright install`). A failing test leaves `failure.png` (and the
page's console log) in its tmp folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from animdiff.params import Params
from server_helpers import tiny_job

CHROMIUM = os.environ.get("ANIMDIFF_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "browser tests need Debian's chromium (apt-get install -y chromium); not found",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="browser tests need playwright (pip install playwright)"
)

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TWO_KEYFRAMES = "0: a corgi sitting on the beach\n8: a corgi jumping on the beach"
INFOTEXT = (
    "a red fox in the snow\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 7, Sampler: Euler a, CFG scale: 5.5, Seed: 1234, Size: 64x72, "
    'AnimateDiff: "model: tiny-mm-v2.ckpt, video_length: 24, fps: 12, loop_number: 0, '
    'closed_loop: N, batch_size: 8, stride: 1, overlap: -1, interp: Off, interp_x: 10"'
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    console: list[str] = []
    page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
    page.on("pageerror", lambda exc: console.append(f"pageerror: {exc}"))
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        (tmp_path / "console.log").write_text("\n".join(console))
        print(f"UI failure screenshot: {tmp_path / 'failure.png'}")
    context.close()
    assert not [line for line in console if line.startswith("pageerror")], console


def open_ui(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")


def fill_tiny(page: Any, **values: Any) -> None:
    """The tiny models, 64x64, 2 steps, GIF only; `values` override by field name."""
    settings = {k: v for k, v in tiny_job(**values).items() if k not in ("prompt", "formats") or k in values}
    for name, value in settings.items():
        selector = f"#f-{name}"
        if page.eval_on_selector(selector, "n => n.tagName") == "SELECT":
            # Model pickers hold the models folder's names ("AnimateDiff/tiny-mm-v2.ckpt").
            option = page.eval_on_selector(
                selector,
                "(s, v) => [...s.options].map(o => o.value).find(o => o === v || o.endsWith('/' + v))",
                str(value),
            )
            assert option, f"{name}: no option {value!r}"
            page.select_option(selector, option)
        else:
            page.fill(selector, str(value))
    for box in page.query_selector_all("#f-formats input"):
        box.set_checked(box.get_attribute("value") == "gif")


def history_row(page: Any, job_id: str) -> Any:
    return page.locator(f"#history li[data-job='{job_id}']")


def test_generate_watch_progress_download(page, preview_server, tmp_path):
    open_ui(page, preview_server.url)
    # Every setting has its control on the page (built from the schema).
    for name in Params.model_fields:
        assert page.locator(f".field[data-field='{name}']").count() == 1, name
    label = page.locator(".field[data-field='context'] label").first.inner_text()
    assert label.startswith("Context batch size")

    page.fill("#f-prompt", TWO_KEYFRAMES)
    page.wait_for_function("document.getElementById('tokens-prompt').textContent.includes('2 keyframes')")
    fill_tiny(page, frames=16, context=8)
    # Record every width the progress bar takes.
    page.evaluate(
        """() => {
        window.__fractions = [];
        const bar = document.getElementById('progress');
        new MutationObserver(() => window.__fractions.push(Number(bar.dataset.fraction)))
            .observe(bar, {attributes: true, attributeFilter: ['data-fraction']});
        window.__previews = [];
        const preview = document.getElementById('live-preview');
        new MutationObserver(() => window.__previews.push(preview.getAttribute('src')))
            .observe(preview, {attributes: true, attributeFilter: ['src']});
    }"""
    )
    page.click("#generate")
    page.wait_for_selector("#result img.result-gif", timeout=120_000)
    page.wait_for_function("document.querySelector('#result img.result-gif').naturalWidth > 0")
    fractions = page.evaluate("window.__fractions")
    assert any(0 < f < 1 for f in fractions), fractions
    assert fractions == sorted(fractions) and fractions[-1] == 1.0, fractions
    assert "succeeded" in page.inner_text("#progress-text")
    previews = page.evaluate("window.__previews")
    assert previews and all("/preview" in src for src in previews), previews
    assert "Seed: 42" in page.inner_text("#infotext")

    with page.expect_download() as download:
        page.click("#files a[data-format='gif']")
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    with Image.open(path) as gif:
        assert gif.n_frames == 16

    # The job is in the history; re-use of its seed.
    page.fill("#f-seed", "-1")
    page.click("#seed-reuse")
    assert page.input_value("#f-seed") == "42"
    assert page.locator("#history li[data-status='succeeded']").count() == 1


def test_errors_appear_next_to_their_field(page, live_server):
    open_ui(page, live_server.url)
    fill_tiny(page, cfg_scale=45)
    page.fill("#f-prompt", "a cat")
    page.click("#generate")
    page.wait_for_function("document.getElementById('err-cfg_scale').textContent.length > 0")
    assert "must be at most 30" in page.inner_text("#err-cfg_scale")
    assert page.inner_text("#general-error") == ""
    assert page.locator(".field[data-field='cfg_scale'].invalid").count() == 1


def test_cancel_a_running_job_and_a_queued_one(page, live_server):
    open_ui(page, live_server.url)
    page.fill("#f-prompt", "a long walk")
    fill_tiny(page, frames=128, context=8, steps=60)
    page.click("#generate")
    page.wait_for_selector("#queue li[data-status='running']", timeout=60_000)
    page.fill("#f-prompt", "a walk that never starts")
    page.click("#generate")
    queued = page.locator("#queue li[data-status='queued']")
    queued.wait_for()
    queued_id = queued.get_attribute("data-job")
    queued.locator(".cancel-job").click()
    page.wait_for_selector(f"#history li[data-job='{queued_id}'][data-status='canceled']")

    running = page.locator("#queue li[data-status='running']")
    running.click()  # follow the running job in the output panel
    page.wait_for_function(
        "document.getElementById('progress-text').textContent.includes('denoise')", timeout=60_000
    )
    page.click("#cancel")
    page.wait_for_selector("#history li[data-status='canceled'] >> nth=1", timeout=60_000)
    assert page.locator("#history li[data-status='canceled']").count() == 2
    assert page.locator("#result img").count() == 0
    assert page.locator("#queue li[data-job]").count() == 0


def test_paste_infotext_fills_the_form(page, live_server, tmp_path):
    open_ui(page, live_server.url)
    page.click("#png-info-panel summary")
    page.fill("#paste-infotext", INFOTEXT)
    page.click("#send-infotext")
    page.wait_for_function("document.getElementById('f-steps').value === '7'")
    assert page.input_value("#f-prompt") == "a red fox in the snow"
    assert page.input_value("#f-negative_prompt") == "blurry, lowres"
    assert page.input_value("#f-cfg_scale") == "5.5"
    assert page.input_value("#f-seed") == "1234"
    assert page.input_value("#f-sampler") == "Euler a"
    assert (page.input_value("#f-width"), page.input_value("#f-height")) == ("64", "72")
    assert page.input_value("#f-frames") == "24"
    assert page.input_value("#f-context") == "8"
    assert page.input_value("#f-closed_loop") == "N"
    assert page.input_value("#f-motion_module") == "AnimateDiff/tiny-mm-v2.ckpt"

    # A result file read as A1111's PNG Info reads it (a GIF carrying the text as its comment).
    gif = tmp_path / "result.gif"
    Image.new("RGB", (8, 8)).save(gif, comment=INFOTEXT.replace("Steps: 7", "Steps: 9").encode())
    page.set_input_files("#infotext-file", str(gif))
    page.wait_for_function("document.getElementById('f-steps').value === '9'")
    assert "Steps: 9" in page.input_value("#paste-infotext")

    # A file dropped anywhere on the page (here a TXT result).
    page.evaluate(
        """text => {
        const data = new DataTransfer();
        data.items.add(new File([text], "result.txt", {type: "text/plain"}));
        document.getElementById('settings').dispatchEvent(
            new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
    }""",
        INFOTEXT.replace("Steps: 7", "Steps: 11"),
    )
    page.wait_for_function("document.getElementById('f-steps').value === '11'")


def test_controlnet_unit_with_hint_preview(page, live_server, tmp_path):
    open_ui(page, live_server.url)
    page.click("details[data-group='ControlNet'] summary")
    page.click("#add-unit")
    page.click("#add-unit")
    assert page.locator(".unit").count() == 2
    page.locator(".unit").nth(1).locator(".remove-unit").click()
    # The LoRA picker inserts a tag at the cursor.
    page.fill("#f-prompt", "a cat")
    page.select_option("#lora-pick", "Lora/tiny-style.safetensors")
    page.click("#lora-insert")
    assert page.input_value("#f-prompt") == "a cat, <lora:tiny-style:1>"
    page.wait_for_function("document.getElementById('tokens-prompt').title.includes('tiny-style')")

    unit = page.locator(".unit").first
    assert unit.locator("[data-unit-field='model'] select").input_value().startswith("ControlNet/")
    assert unit.locator("[data-unit-field='weight'] input").input_value() == "1"
    unit.locator("[data-unit-field='module'] select").select_option("canny")
    assert unit.locator("[data-unit-field='threshold_a'] label").inner_text() != "Threshold A"
    square = tmp_path / "square.png"
    pixels = Image.new("RGB", (64, 64))
    pixels.paste((255, 255, 255), (16, 16, 48, 48))
    pixels.save(square)
    unit.locator("[data-unit-field='image'] input[type=file]").set_input_files(str(square))
    page.wait_for_function("document.querySelector('.unit .hint-preview').naturalWidth === 64")
    assert unit.locator("[data-unit-field='image'] input[type=text]").input_value().endswith("square.png")
    # A unit's error appears next to the unit's field.
    unit.locator("[data-unit-field='weight'] input").fill("3")
    page.fill("#f-prompt", "a cat")
    fill_tiny(page)
    page.click("#generate")
    page.wait_for_function("document.querySelector('.unit [data-error=weight]').textContent.length > 0")
    assert "must be at most 2" in unit.locator("[data-error='weight']").inner_text()
    # Fixed, the unit goes into the job and guides it.
    unit.locator("[data-unit-field='weight'] input").fill("0.8")
    page.click("#generate")
    page.wait_for_selector("#result img.result-gif", timeout=120_000)
    job = page.locator("#history li[data-status='succeeded']").first.get_attribute("data-job")
    units = httpx.get(f"{live_server.url}/api/v1/jobs/{job}").json()["params"]["controlnet_units"]
    assert [(u["model"], u["module"], u["weight"]) for u in units] == [
        ("ControlNet/tiny-controlnet-canny.safetensors", "canny", 0.8)
    ]


def test_history_survives_a_restart(page, live_server):
    body = tiny_job(prompt="a corgi in the history", seed=7)
    job_id = httpx.post(f"{live_server.url}/api/v1/jobs", json=body).json()["id"]
    open_ui(page, live_server.url)
    history_row(page, job_id).wait_for(timeout=120_000)
    page.wait_for_selector(f"#history li[data-job='{job_id}'][data-status='succeeded']", timeout=120_000)

    live_server.restart()
    page.reload()
    page.wait_for_selector("body[data-ready='1']")
    row = history_row(page, job_id)
    row.wait_for()
    assert row.get_attribute("data-status") == "succeeded"
    page.wait_for_function(
        f"document.querySelector(\"#history li[data-job='{job_id}'] img.thumb\").naturalWidth > 0"
    )
    row.click()
    page.wait_for_function("document.getElementById('f-prompt').value === 'a corgi in the history'")
    assert page.input_value("#f-seed") == "7"
    page.wait_for_selector("#result img.result-gif")
