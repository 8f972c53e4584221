"""`animdiff batch`: reading jobs, X/Y sweeps, running here or on a server, the result grid."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from animdiff.batch import expand, main, parse_axis, read_jobs
from animdiff.errors import ParamsError
from server_helpers import tiny_job

BASE = tiny_job(seed=1)


def test_read_json_lines_csv_and_json(tmp_path: Path) -> None:
    lines = tmp_path / "jobs.jsonl"
    lines.write_text('{"prompt": "a", "steps": 2}\n\n{"prompt": "b"}\n')
    assert read_jobs(lines) == [{"prompt": "a", "steps": 2}, {"prompt": "b"}]
    table = tmp_path / "jobs.csv"
    table.write_text('prompt,steps,cfg_scale\n"a cat, running",10,\nb,20,7.5\n')
    assert read_jobs(table) == [
        {"prompt": "a cat, running", "steps": 10},
        {"prompt": "b", "steps": 20, "cfg_scale": 7.5},
    ]
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"prompt": "x", "formats": ["gif"]}, indent=2))
    assert read_jobs(one) == [{"prompt": "x", "formats": ["gif"]}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1, 2]")
    with pytest.raises(ParamsError, match="job 1 is not an object"):
        read_jobs(bad)


def test_sweep_expands_x_across_y_down() -> None:
    assert parse_axis("steps=10, 20", "--x") == ("steps", [10, 20])
    assert parse_axis('prompt="a, b",c', "--x") == ("prompt", ["a, b", "c"])
    with pytest.raises(ParamsError):
        parse_axis("steps", "--x")
    jobs = expand(
        [{"prompt": "p"}], parse_axis("steps=10,20", "--x"), parse_axis("cfg_scale=5,7", "--y"), {"seed": 3}
    )
    assert [(j.settings["steps"], j.settings["cfg_scale"]) for j in jobs] == [
        (10, 5),
        (20, 5),
        (10, 7),
        (20, 7),
    ]
    assert all(j.settings["seed"] == 3 and j.settings["prompt"] == "p" for j in jobs)
    unseeded = expand([{"prompt": "p"}, {"prompt": "q"}], parse_axis("steps=1,2", "--x"))
    assert unseeded[0].settings["seed"] == unseeded[1].settings["seed"] != -1  # one seed per file job
    assert "seed" not in expand([{"prompt": "p"}])[0].settings  # a plain list keeps the default


def test_local_sweep_writes_a_labelled_grid(tmp_path: Path, models_dir: Path) -> None:
    jobs = tmp_path / "base.jsonl"
    jobs.write_text(json.dumps(BASE) + "\n")
    out = tmp_path / "out"
    code = main(
        [
            str(jobs),
            "--x",
            "steps=1,2",
            "--y",
            "seed=1,2",
            "--models-dir",
            str(models_dir),
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in results] == ["succeeded"] * 4
    assert [(r["settings"]["steps"], r["settings"]["seed"]) for r in results] == [
        (1, 1),
        (2, 1),
        (1, 2),
        (2, 2),
    ]
    with Image.open(out / "grid.gif") as grid:
        assert grid.n_frames == 8
        assert grid.width > 2 * 64 and grid.height > 2 * 64  # two by two cells plus labels
    assert (out / "contact.png").exists()


def test_bad_settings_stop_before_anything_runs(tmp_path: Path, models_dir: Path) -> None:
    jobs = tmp_path / "base.jsonl"
    jobs.write_text(json.dumps(BASE) + "\n")
    code = main(
        [str(jobs), "--x", "steps=2,-1", "--models-dir", str(models_dir), "--out", str(tmp_path / "o")]
    )
    assert code == 1 and not (tmp_path / "o" / "results.jsonl").exists()


@pytest.fixture
def live_server(models_dir: Path, animator, tmp_path: Path) -> Iterator[str]:
    """A real `animdiff serve` on a free port (uvicorn in a thread), with an API key."""
    pytest.importorskip("fastapi")
    import uvicorn

    from animdiff.server.app import create_app
    from animdiff.server.settings import ServerSettings

    settings = ServerSettings(
        models_dir=models_dir, data_dir=tmp_path / "data", devices=("cpu",), api_keys=("sekret",)
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, animators=[animator]), port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not (server.started and server.servers):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def test_batch_on_a_server(tmp_path: Path, live_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "jobs.csv"
    table.write_text("seed,motion_module\n1,tiny-mm-v2.ckpt\n2,tiny-mm-v1.ckpt\n3,tiny-mm-v2.ckpt\n")
    out = tmp_path / "out"
    args = [
        str(table),
        "--set",
        f"checkpoint={BASE['checkpoint']}",
        "--set",
        "steps=2",
        "--set",
        "width=64",
        "--set",
        "height=64",
        "--set",
        "frames=8",
        "--set",
        "context=8",
        "--set",
        "prompt=a corgi",
        "--server",
        live_server,
        "--out",
        str(out),
    ]
    assert main([*args, "--api-key", "wrong"]) == 1  # the server's 401, as a message
    monkeypatch.setenv("ANIMDIFF_API_KEY", "sekret")
    assert main(args) == 0
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in results] == ["succeeded"] * 3
    assert all(Path(r["files"][0]).exists() for r in results)
    with Image.open(out / "grid.gif") as grid:
        assert grid.n_frames == 8
