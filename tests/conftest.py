"""Shared fixtures: one folder of tiny models for the whole session (written once, ~10 s)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread: tiny models gain nothing from two, and a busy second core would stall every op.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_thread_for_the_next_test():
    """Every test starts on one thread, whatever the last one ran (a CLI's `main` sets its own).

    Float sums split over two threads round differently: a parity test that follows one that left
    two threads set fails its 1e-4 bound (seen when the order changed).
    """
    yield
    torch.set_num_threads(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "numerics: an equivalence or tolerance that depends on float rounding; CI runs these again "
        "with ATEN_CPU_CAPABILITY=default (`make test-numerics`), since other CPUs pick other kernels",
    )


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from animdiff.testing.factory import write_models_dir

    root = tmp_path_factory.mktemp("models")
    write_models_dir(root)
    return root


@pytest.fixture(scope="session")
def animator(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One Animator (and model cache) for the session; tests write into their own out folder.

    On the CPU in float32 even where CUDA exists: the tolerances here are measured for that, and
    a test about CUDA asks for it itself (and is skipped without it).
    """
    from animdiff.pipeline import Animator, RunOptions

    return Animator(models_dir, tmp_path_factory.mktemp("outputs"), RunOptions(device="cpu"))


@pytest.fixture(scope="session")
def tiny_params():
    """A factory of settings small enough for a CPU test: 64x64, few steps, the tiny models."""
    return _tiny_params


def _tiny_params(**overrides):
    from animdiff.params import make_params
    from server_helpers import tiny_job

    return make_params(tiny_job(**{"steps": 3, **overrides}))


@pytest.fixture
def settings_factory(tmp_path: Path, models_dir: Path):
    """`settings_factory(**overrides)`: server settings on the tiny models and a fresh data folder."""
    pytest.importorskip("fastapi")
    from animdiff.server.settings import ServerSettings

    def make(**overrides):
        values = dict(
            models_dir=models_dir, data_dir=tmp_path / "data", devices=("cpu",), progress_interval_s=0.0
        )
        values.update(overrides)
        return ServerSettings(**values)

    return make
