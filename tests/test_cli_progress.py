"""One progress display for the whole job: phases named, one total from the start, a final line."""

from __future__ import annotations

import io
import re
from pathlib import Path

from animdiff.cli import main
from animdiff.cli_progress import JobProgress
from animdiff.pipeline import PHASES, Progress


def test_a_piped_run_names_each_phase_once_with_fixed_totals(
    models_dir: Path, tmp_path: Path, capsys
) -> None:
    argv = ["generate", "a corgi", "--models-dir", str(models_dir), "--out", str(tmp_path)]
    argv += ["--checkpoint", "tiny-sd15", "--motion-module", "tiny-mm-v2.ckpt", "--width", "64"]
    argv += ["--height", "64", "--steps", "3", "--sampler", "Heun", "--frames", "12", "--context", "8"]
    argv += ["--seed", "7", "--format", "gif", "--device", "cpu"]
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    # The summary comes first: what will run, before anything loads.
    assert err[0].startswith("checkpoint: ") and "tiny-sd15.safetensors" in err[0]
    assert err[1].startswith("motion module: ") and "motion module v2" in err[1]
    assert "seed: 7" in err
    assert any(line.startswith("frames: 12 frames written, context 8, ") for line in err)
    assert any("(5 model evaluations)" in line for line in err)  # Heun, 3 steps: 2 * 3 - 1
    phases = [m.group(1) for line in err if (m := re.match(r"\[\d/6\] (\w+)", line))]
    assert list(dict.fromkeys(phases)) == ["load", "encode", "denoise", "decode", "write"]
    totals = {int(m.group(1)) for line in err if (m := re.search(r"denoise \d+/(\d+)", line))}
    assert totals == {5}
    assert len([line for line in err if line.startswith("[1/6] load")]) == 1  # never printed twice
    assert re.fullmatch(r"done in \d+:\d\d", err[-1])


def test_interactive_bar_keeps_its_total_and_leaves_one_line() -> None:
    stream = io.StringIO()
    display = JobProgress({"denoise": 39, "decode": 8}, stream=stream, interactive=True)
    display(Progress("load", 0, 1))
    display(Progress("denoise", 0, 39))
    display(Progress("denoise", 3, 39, window=2, windows=3))
    assert display.bar.total == 39 and display.bar.n == 3
    display(Progress("decode", 4, 8))
    assert display.bar.total == 39
    display.finish()
    assert stream.getvalue().rstrip().splitlines()[-1].startswith("done in ")
    assert "window 2/3" in stream.getvalue()


def test_failure_says_where_it_stopped() -> None:
    stream = io.StringIO()
    display = JobProgress({"denoise": 10}, stream=stream, interactive=False)
    display(Progress("denoise", 0, 10))
    display.finish(ok=False)
    assert stream.getvalue().splitlines()[-1].startswith("stopped during denoise in ")


def test_phase_names_are_the_pipeline_phases() -> None:
    assert PHASES == ("load", "encode", "denoise", "decode", "interpolate", "write")
