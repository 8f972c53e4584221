"""What an Animator keeps between jobs: loaded models and the FILM model."""

from __future__ import annotations

from pathlib import Path

import torch

from animdiff.pipeline import Animator, RunOptions


def test_film_is_loaded_once_for_many_jobs(models_dir: Path, tiny_params, monkeypatch) -> None:
    loads = []
    real_load = torch.jit.load

    def counting_load(*args, **kwargs):
        loads.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "load", counting_load)
    animator = Animator(models_dir, None, RunOptions(device="cpu"))
    for seed in (1, 2):
        result = animator.run(tiny_params(interp="FILM", interp_x=2, seed=seed, steps=1), write=False)
        assert len(result.frames) > 8
    assert len(loads) == 1


def test_prepare_resolves_what_will_run(models_dir: Path, tiny_params) -> None:
    animator = Animator(models_dir, None, RunOptions(device="cpu"))
    job = animator.prepare(tiny_params(frames=20, context=8, sampler="Heun", steps=4, seed=-1), write=False)
    assert job.checkpoint == (models_dir / "Stable-diffusion" / "tiny-sd15.safetensors").resolve()
    assert job.motion_module.name == "tiny-mm-v2.ckpt"
    assert 0 <= job.seed < 2**32
    assert job.model_evaluations == 7  # Heun: two evaluations per step but the last
    assert job.counts.video_length == 20 and job.counts.batch == 20
    assert job.windows_per_evaluation[0] >= 3
    assert job.out_dir is None


def test_fewer_frames_than_context_warns_and_is_recorded(models_dir: Path, tiny_params) -> None:
    animator = Animator(models_dir, None, RunOptions(device="cpu"))
    result = animator.run(tiny_params(frames=4, context=8, steps=1), write=False)
    assert len(result.frames) == 4
    assert any("8 frames are generated and the first 4 kept" in w for w in result.warnings)
    assert "generated_frames: 8" in result.infotext


def test_video_model_moves_inputs_to_the_model(models_dir: Path, tiny_params) -> None:
    animator = Animator(models_dir, None, RunOptions(device="cpu"))
    models = animator.load(tiny_params())
    sample = torch.zeros(1, 4, 2, 8, 8, dtype=torch.float64)
    embeddings = torch.zeros(2, 77, models.parts.text_encoder.config.hidden_size, dtype=torch.float64)
    eps = models.video_model(sample, torch.tensor(500), embeddings)
    assert eps.dtype == torch.float32 and eps.shape == sample.shape and eps.device == sample.device
