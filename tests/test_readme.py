"""Every `sh` block of the README runs as written (the `make` lines are the suite and the demo).

The commands run in a scratch folder laid out as a checkout after `make demo`: `demo-models` is
the session's tiny models folder, `examples/` the repository's, and `.venv` the environment running
this test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)


def readme_commands() -> list[str]:
    commands = []
    for block in BLOCK.findall((ROOT / "README.md").read_text()):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #", 1)[0].strip()
            if command and not command.startswith(("#", "make ")):
                commands.append(command)
    return commands


def test_the_readme_has_runnable_commands() -> None:
    assert len(readme_commands()) >= 5


def test_readme_commands_run_as_written(models_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "demo-models").symlink_to(models_dir)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    (tmp_path / ".venv").symlink_to(sys.prefix)
    # The commands as written pick CUDA where there is one; tests run on the CPU.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for command in readme_commands():
        done = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            pytest.fail(f"README command failed ({done.returncode}): {command}\n{done.stderr[-2000:]}")
