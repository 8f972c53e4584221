"""`animdiff batch FILE`: many jobs at once, on a server or here, and one grid of the results.

FILE holds the jobs: JSON lines (one settings object a line), a CSV (a header of setting names,
one job a row; empty cells keep the defaults), or a JSON object or list. `--x NAME=V1,V2` and
`--y NAME=V1,V2` sweep any two settings over every job of the file (A1111's X/Y plot habit): the
jobs are the file's jobs times every X value times every Y value, X across and Y down the grid.
Values are read as JSON where they parse (`10`, `7.5`, `true`, `[1,2]`), as text otherwise;
quote a value that holds a comma (`--x 'prompt="a cat, running","a dog"'`). `--set NAME=VALUE`
applies to every job.

With `--server URL` (and `--api-key`, or `ANIMDIFF_API_KEY`) the jobs go to a running
`animdiff serve`, all queued at once so every worker gets some, and their files are downloaded;
otherwise they run here, one after the other, with `--models-dir`. The output folder gets
`results.jsonl` (each job's settings, id, status, files, error), the files, `grid.gif` (every
result animating in its cell, labelled) and `contact.png` (the same grid, one frame).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import math
import os
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from animdiff.errors import AnimdiffError, ParamsError

API_KEY_ENV = "ANIMDIFF_API_KEY"
TERMINAL = {"succeeded", "failed", "canceled", "interrupted"}
LABEL_HEIGHT = 14


@dataclass
class BatchJob:
    settings: dict[str, Any]
    x: Any = None  # this job's sweep values (None outside a sweep)
    y: Any = None
    source: int = 0  # its job in FILE
    id: str | None = None
    status: str = "pending"
    error: str | None = None
    files: list[Path] = field(default_factory=list)
    frames: list[Any] = field(default_factory=list)  # PIL images
    fps: float | None = None


# --- reading the jobs ---------------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignment(text: str, option: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ParamsError(f"{option} {text!r}: expected NAME=VALUE")
    return name.strip(), value


def parse_axis(text: str, option: str) -> tuple[str, list[Any]]:
    """`steps=10,20` -> ("steps", [10, 20]); csv quoting keeps commas inside a value."""
    name, values = parse_assignment(text, option)
    items = next(csv.reader([values], skipinitialspace=True), [])
    if not items or any(item == "" for item in items):
        raise ParamsError(f"{option} {text!r}: give one or more comma-separated values")
    return name, [parse_value(item) for item in items]


def read_jobs(path: Path) -> list[dict[str, Any]]:
    """The settings objects of FILE ('-': standard input)."""
    try:
        text = sys.stdin.read() if str(path) == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ParamsError(f"cannot read {path}: {exc.strerror}") from None
    if str(path).lower().endswith(".csv"):
        rows = list(csv.DictReader(io.StringIO(text)))
        jobs = [
            {
                name.strip(): parse_value(value)
                for name, value in row.items()
                if name and value not in (None, "")
            }
            for row in rows
        ]
    else:
        stripped = text.strip()
        try:
            if stripped.startswith("[") or (stripped.startswith("{") and "\n{" not in stripped):
                data = json.loads(stripped) if stripped else []
                jobs = data if isinstance(data, list) else [data]
            else:
                jobs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise ParamsError(f"{path}: not JSON lines, a JSON object or list, nor a .csv ({exc})") from None
    for index, job in enumerate(jobs):
        if not isinstance(job, dict):
            raise ParamsError(f"{path}: job {index + 1} is not an object of settings")
    if not jobs:
        raise ParamsError(f"{path}: no jobs")
    return jobs


def expand(
    base: list[dict[str, Any]],
    x: tuple[str, list[Any]] | None = None,
    y: tuple[str, list[Any]] | None = None,
    common: dict[str, Any] | None = None,
) -> list[BatchJob]:
    """Every file job x every X value x every Y value (Y outermost, so the grid fills row by row).
    In a sweep, a job without a seed (or -1) gets one random seed for all its cells, as in A1111's
    X/Y plot, so the cells differ only by what is swept."""
    xs = x[1] if x else [None]
    ys = y[1] if y else [None]
    swept = {axis[0] for axis in (x, y) if axis}
    jobs = []
    for source, settings in enumerate(base):
        settings = {**settings, **(common or {})}
        if swept and "seed" not in swept and settings.get("seed", -1) in (-1, None):
            settings["seed"] = random.randrange(2**32)
        for y_value, x_value in itertools.product(ys, xs):
            values = dict(settings)
            if x:
                values[x[0]] = x_value
            if y:
                values[y[0]] = y_value
            jobs.append(BatchJob(values, x_value, y_value, source))
    return jobs


def check_settings(jobs: list[BatchJob]) -> None:
    """Every job's settings are valid before the first one runs (a typo costs nothing)."""
    from animdiff.params import validate_params

    for index, job in enumerate(jobs):
        try:
            validate_params(job.settings)
        except AnimdiffError as exc:
            raise ParamsError(f"job {index + 1} ({_describe(job)}): {exc}") from None


def _describe(job: BatchJob) -> str:
    parts = [f"{k}={v}" for k, v in (("x", job.x), ("y", job.y)) if v is not None]
    return ", ".join(parts) or f"line {job.source + 1}"


# --- running them -------------------------------------------------------------------------------------


class Remote:
    """A running `animdiff serve`, through its native API (stdlib HTTP only)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        url = path if path.startswith("http") else self.url + path
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as answer:
                return answer.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("detail", detail)
            raise AnimdiffError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise AnimdiffError(f"cannot reach {self.url}: {exc.reason}") from None

    def json(self, method: str, path: str, body: Any = None) -> Any:
        return json.loads(self.request(method, path, body))


def run_remote(
    jobs: list[BatchJob], remote: Remote, out: Path, poll_s: float = 0.5, timeout: float | None = None
):
    for job in jobs:  # all queued at once: every worker of the server gets its share
        job.id = remote.json("POST", "/api/v1/jobs", job.settings)["id"]
        job.status = "queued"
    deadline = None if timeout is None else time.monotonic() + timeout
    waiting = list(jobs)
    while waiting:
        for job in list(waiting):
            view = remote.json("GET", f"/api/v1/jobs/{job.id}")
            if view["status"] not in TERMINAL:
                continue
            waiting.remove(job)
            job.status, job.error = view["status"], view.get("error")
            folder = out / "jobs" / str(job.id)
            for item in view.get("files", []):
                path = folder / item["name"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(remote.request("GET", item["url"]))
                job.files.append(path)
            job.frames, duration = _frames_of(job.files)
            if duration:
                job.fps = 1000 / duration
            _report(job)
        if waiting:
            if deadline is not None and time.monotonic() > deadline:
                raise AnimdiffError(f"{len(waiting)} job(s) not finished after {timeout} s")
            time.sleep(poll_s)


def run_local(jobs: list[BatchJob], models_dir: Path, out: Path, device: str | None = None) -> None:
    from animdiff.params import validate_params
    from animdiff.pipeline import Animator, RunOptions

    animator = Animator(models_dir, out / "jobs", RunOptions(device=device))
    for index, job in enumerate(jobs):
        job.id = f"{index + 1:04}"
        try:
            result = animator.run(validate_params(job.settings))
        except AnimdiffError as exc:
            job.status, job.error = "failed", str(exc)
        else:
            job.status, job.frames, job.fps = "succeeded", list(result.frames), result.fps
            job.files = list(result.files.values())
        _report(job)


def _report(job: BatchJob) -> None:
    where = ", ".join(str(p) for p in job.files) if job.files else (job.error or "")
    print(f"{job.id} {job.status} ({_describe(job)}) {where}", file=sys.stderr)


def _frames_of(files: list[Path]) -> tuple[list[Any], float | None]:
    """The frames of the first animation among the files (GIF, WEBP or PNG frames) and its
    frame duration in ms when it says."""
    from PIL import Image, ImageSequence

    for suffix in (".gif", ".webp", ".png"):
        found = sorted(p for p in files if p.suffix.lower() == suffix)
        if not found:
            continue
        if suffix == ".png":
            return [Image.open(p).convert("RGB") for p in found], None
        with Image.open(found[0]) as image:
            duration = image.info.get("duration")
            return [frame.convert("RGB") for frame in ImageSequence.Iterator(image)], duration
    return [], None


# --- the grid -----------------------------------------------------------------------------------------


def layout(jobs: list[BatchJob], x_count: int | None, y_swept: bool) -> tuple[int, int, list[str], list[str]]:
    """(columns, rows, column labels, row labels); a sweep is X across, Y (then file job) down;
    a plain list is a square-ish grid."""
    if x_count is None and not y_swept:
        columns = math.ceil(math.sqrt(len(jobs)))
        return columns, math.ceil(len(jobs) / columns), [], []
    columns = x_count or 1
    rows = len(jobs) // columns
    col_labels = [_label(job.x) for job in jobs[:columns]] if x_count else []
    firsts = [jobs[r * columns] for r in range(rows)]
    several = len({job.source for job in jobs}) > 1
    row_labels = [
        (f"#{job.source + 1} " if several else "") + (_label(job.y) if y_swept else "") for job in firsts
    ]
    if not any(label.strip() for label in row_labels):
        row_labels = []
    return columns, rows, col_labels, [label.strip() for label in row_labels]


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def make_grid(
    jobs: list[BatchJob],
    x: tuple[str, list[Any]] | None,
    y: tuple[str, list[Any]] | None,
    out: Path,
    fps: float | None = None,
) -> tuple[Path, Path] | None:
    """grid.gif and contact.png; None when no job has frames."""
    from PIL import Image, ImageDraw

    sized = [j for j in jobs if j.frames]
    if not sized:
        return None
    cell_w = max(f.width for j in sized for f in j.frames[:1])
    cell_h = max(f.height for j in sized for f in j.frames[:1])
    x_name, y_name = (x[0] if x else None), (y[0] if y else None)
    columns, rows, col_labels, row_labels = layout(jobs, len(x[1]) if x else None, y is not None)
    top = LABEL_HEIGHT if col_labels else 0
    left = max((len(f"{y_name}={t}") for t in row_labels), default=0) * 6 + 6 if row_labels else 0
    cell_label = 0 if (col_labels or row_labels) else LABEL_HEIGHT
    width, height = left + columns * cell_w, top + rows * (cell_h + cell_label)
    length = max(len(j.frames) for j in sized)

    def frame(index: int) -> Any:
        canvas = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(canvas)
        for c, text in enumerate(col_labels):
            draw.text((left + c * cell_w + 2, 1), f"{x_name}={text}" if x_name else text, fill="black")
        for r, text in enumerate(row_labels):
            label = f"{y_name}={text}" if y_name and not text.startswith("#") else text
            draw.text((2, top + r * cell_h + cell_h // 2 - 5), label, fill="black")
        for n, job in enumerate(jobs):
            c, r = n % columns, n // columns
            x0, y0 = left + c * cell_w, top + r * (cell_h + cell_label)
            if cell_label:
                draw.text((x0 + 2, y0 + 1), f"{job.id} {job.status}"[:24], fill="black")
            y0 += cell_label
            if job.frames:
                image = job.frames[index % len(job.frames)]
                if image.size != (cell_w, cell_h):
                    image = image.resize((cell_w, cell_h))
                canvas.paste(image, (x0, y0))
            else:
                draw.rectangle((x0, y0, x0 + cell_w - 1, y0 + cell_h - 1), outline="red")
                draw.text((x0 + 2, y0 + 2), job.status, fill="red")
        return canvas

    frames = [frame(i) for i in range(length)]
    out.mkdir(parents=True, exist_ok=True)
    gif, contact = out / "grid.gif", out / "contact.png"
    rate = fps or next((j.fps for j in sized if j.fps), None) or 8
    frames[0].save(
        gif, save_all=True, append_images=frames[1:], duration=max(20, round(1000 / rate)), loop=0, disposal=1
    )
    frames[0].save(contact)
    return gif, contact


# --- the command --------------------------------------------------------------------------------------


def add_batch_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    batch = subparsers.add_parser(
        "batch", help="run a list or an X/Y sweep of jobs (here or on a server) and grid the results"
    )
    batch.add_argument("file", type=Path, help="jobs: JSON lines, a .csv of settings, or JSON ('-': stdin)")
    batch.add_argument("--x", metavar="NAME=V1,V2", help="sweep a setting across the grid")
    batch.add_argument("--y", metavar="NAME=V1,V2", help="sweep a setting down the grid")
    batch.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="for every job")
    batch.add_argument("--server", help="URL of a running `animdiff serve` (default: run here)")
    batch.add_argument("--api-key", help="the server's API key (default: env ANIMDIFF_API_KEY)")
    batch.add_argument("--models-dir", type=Path, help="models folder, to run here")
    batch.add_argument("--device", help="cuda, cuda:N or cpu, to run here")
    batch.add_argument(
        "--out", type=Path, default=Path("batch-out"), help="output folder (default batch-out)"
    )
    batch.add_argument("--timeout", type=float, help="give up waiting for the server after this many seconds")
    batch.add_argument("--no-grid", action="store_true", help="skip grid.gif and contact.png")
    return batch


def run_batch(args: argparse.Namespace) -> int:
    x = parse_axis(args.x, "--x") if args.x else None
    y = parse_axis(args.y, "--y") if args.y else None
    if x and y and x[0] == y[0]:
        raise ParamsError(f"--x and --y both sweep {x[0]}")
    common = dict(parse_assignment(item, "--set") for item in args.set)
    common = {name: parse_value(value) for name, value in common.items()}
    jobs = expand(read_jobs(args.file), x, y, common)
    if args.server is None:
        if args.models_dir is None:
            raise ParamsError("give --server URL to use a server, or --models-dir to run the jobs here")
        check_settings(jobs)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(jobs)} job(s)", file=sys.stderr)
    if args.server:
        key = args.api_key or os.environ.get(API_KEY_ENV) or None
        run_remote(jobs, Remote(args.server, key), out, timeout=args.timeout)
    else:
        run_local(jobs, args.models_dir, out, args.device)
    with (out / "results.jsonl").open("w", encoding="utf-8") as lines:
        for job in jobs:
            record = {"id": job.id, "status": job.status, "settings": job.settings, "error": job.error}
            record["files"] = [str(p) for p in job.files]
            lines.write(json.dumps(record) + "\n")
    if not args.no_grid:
        made = make_grid(jobs, x, y, out)
        if made:
            print(f"grid: {made[0]}\ncontact sheet: {made[1]}")
    failed = [job for job in jobs if job.status != "succeeded"]
    if failed:
        print(f"{len(failed)} of {len(jobs)} job(s) did not succeed", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m animdiff.batch ...` (the same options as `animdiff batch`)."""
    parser = argparse.ArgumentParser(prog="animdiff")
    add_batch_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["batch", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run_batch(args)
    except AnimdiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
