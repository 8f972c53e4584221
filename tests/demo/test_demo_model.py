"""The demo model's files: real layouts, loaded by the ordinary loader, small, reproducible."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from animdiff.demo import model as demo
from animdiff.demo.train import TrainSettings, train
from animdiff.models.detect import Kind, detect_file
from animdiff.models.load import load_checkpoint, load_motion_module


def _tiny(**overrides) -> TrainSettings:
    """Training settings small enough for a test: stages 1-3 a step or a few each, no stage 4."""
    small = dict(vae_steps=2, vae_batch=4, pairs=2, steps=2, batch_pairs=2, focus_steps=3, focus_pairs=2)
    return TrainSettings(**{"threads": 1, **small, "decoder_steps": 0, **overrides})


def _half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}


def _same(loaded: torch.nn.Module, written: torch.nn.Module) -> None:
    expected = _half(written.state_dict())
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_written_files_load_through_the_users_path_to_the_same_tensors(tmp_path: Path) -> None:
    model = demo.build(seed=3)
    files = demo.write_weights(model, tmp_path)
    assert detect_file(files["checkpoint"]).kind is Kind.SD15
    assert detect_file(files["motion_module"]).kind is Kind.MM_V3
    parts = load_checkpoint(files["checkpoint"])
    _same(parts.unet, model.unet)
    _same(parts.vae, model.vae)
    _same(parts.text_encoder, model.text_encoder)
    assert parts.vae.config.scaling_factor == demo.LATENT_SCALE
    motion = load_motion_module(files["motion_module"])
    assert motion.pe_length == demo.MOTION_POSITIONS
    _same(motion.adapter, model.motion)


def test_rescaling_the_latents_keeps_reconstructions_and_sets_the_spread() -> None:
    vae = demo.build(seed=4).vae.eval()
    torch.manual_seed(0)
    images = torch.rand(4, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        before = vae.decode(vae.encode(images).latent_dist.mean).sample
        spread = vae.encode(images).latent_dist.mean.std().item()
        demo.rescale_vae_latents(vae, spread)
        posterior = vae.encode(images).latent_dist
        after = vae.decode(posterior.mean).sample
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    assert posterior.mean.std().item() * demo.LATENT_SCALE == pytest.approx(1.0, rel=1e-4)


def test_training_is_seeded_and_stage_3_resumes_from_written_weights(tmp_path: Path) -> None:
    tiny = _tiny(batch_pairs=1, focus_steps=2, decoder_steps=2, decoder_batch=2)
    full = train(tiny, tmp_path / "full")
    again = train(tiny, tmp_path / "again")
    stage_2 = train(replace(tiny, focus_steps=0, decoder_steps=0), tmp_path / "stage2")
    resumed = train(tiny, tmp_path / "resumed", resume_from=tmp_path / "stage2")
    for name, path in full.items():
        assert path.read_bytes() == again[name].read_bytes(), name
        assert path.read_bytes() == resumed[name].read_bytes(), name
        assert path.read_bytes() != stage_2[name].read_bytes(), name  # stage 3 did train
    load_checkpoint(full["checkpoint"])
    load_motion_module(full["motion_module"])


def test_stage_3_turns_one_clip_of_each_pair_round_from_reverse_above(monkeypatch, tmp_path: Path) -> None:
    """`--focus-reverse-above 0`: every stage-3 step gives exactly one clip of each pair its clip
    played backwards; stage 2 (its default, never) asks for none."""
    from animdiff.demo import train as train_module

    asked = []
    real = train_module.noised

    def spy(latents, noise, alpha_bar, blind, backwards=None):
        asked.append(backwards)
        return real(latents, noise, alpha_bar, blind, backwards=backwards)

    monkeypatch.setattr(train_module, "noised", spy)
    tiny = _tiny()
    train(replace(tiny, focus_reverse_above=0, focus_wrap=True), tmp_path / "out")
    assert asked[:2] == [None, None]
    assert len(asked) == 5
    for backwards in asked[2:]:
        assert backwards.view(-1, 2).sum(dim=1).tolist() == [1, 1]


def test_stage_3_picks_the_blind_tops_clips_from_the_noise_when_asked(monkeypatch, tmp_path: Path) -> None:
    """`--focus-pick`: every stage-3 step asks `suggested_clips` for exactly its blind rows; stage 2
    (and a stage 3 without it) never does."""
    from animdiff.demo import train as train_module

    asked = []
    real = train_module.suggested_clips

    def spy(pool, captions, latents, noise, alpha_bar, where):
        asked.append(where.clone())
        return real(pool, captions, latents, noise, alpha_bar, where)

    monkeypatch.setattr(train_module, "suggested_clips", spy)
    tiny = _tiny(focus_pairs=4)
    train(replace(tiny, focus_blind_above=0), tmp_path / "plain")
    assert asked == []
    train(replace(tiny, focus_blind_above=0, focus_pick=True, focus_wrap=True), tmp_path / "picked")
    assert len(asked) == 3 and all(bool(where.all()) for where in asked)


def test_the_shipped_weights_are_small_and_in_the_package() -> None:
    folder = demo.weights_dir()
    files = [folder / "Stable-diffusion" / demo.CHECKPOINT_NAME, folder / "AnimateDiff" / demo.MOTION_NAME]
    for path in files:
        assert path.is_file(), f"{path} is missing: train with `python -m animdiff.demo.train`"
    assert sum(p.stat().st_size for p in files) < 30 * 2**20
    assert detect_file(files[0]).kind is Kind.SD15
    assert detect_file(files[1]).kind is Kind.MM_V3


def test_the_text_encoder_trains_only_when_asked(tmp_path: Path) -> None:
    """Default: it keeps its random initialisation (the README says why); `--train-text-encoder`
    trains it along with the UNet."""
    tiny = _tiny(vae_steps=1, batch_pairs=1, focus_steps=0)
    initial = demo.build(tiny.seed).text_encoder.state_dict()
    for trained in (False, True):
        files = train(replace(tiny, train_text_encoder=trained), tmp_path / str(trained))
        loaded = load_checkpoint(files["checkpoint"]).text_encoder.state_dict()
        same = all(
            torch.equal(loaded[k], v.half().float()) for k, v in initial.items() if v.is_floating_point()
        )
        assert same is not trained


def test_training_noises_on_the_schedule_sampling_uses() -> None:
    """The shipped motion module's kind picks the scheduler's betas when sampling; training must
    noise on the same ones. (Until round 2's seventh session it noised on the sqrt-linear schedule,
    which at t = 500 leaves 0.28 of the signal's power where sampling leaves 0.16.)"""
    from animdiff.demo.train import alphas_cumprod
    from animdiff.family import motion_family
    from animdiff.sampling.samplers import make_scheduler

    kind = detect_file(demo.weights_dir() / "AnimateDiff" / demo.MOTION_NAME).kind
    scheduler = make_scheduler("DDIM", motion_family(kind).betas.scheduler_config())
    assert torch.equal(alphas_cumprod(), scheduler.alphas_cumprod)
    # AnimateDiff's: betas linear from 0.00085 to 0.012, not linear in their square roots.
    betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64)
    assert torch.allclose(alphas_cumprod().double(), torch.cumprod(1 - betas, 0), rtol=1e-4)
    assert alphas_cumprod()[500].item() == pytest.approx(0.1608, abs=1e-4)


def test_a_blind_input_is_the_noise_alone_and_its_target_leaves_the_real_clip() -> None:
    """float64, one call: the clean clip implied by (input, target) is the real one exactly, blind
    or not, and only the blind rows' input lacks the clip."""
    from animdiff.demo.train import alphas_cumprod, noised

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn((4, 4, 16, 8, 8), generator=generator, dtype=torch.float64)
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float64)
    a = alphas_cumprod().double()[torch.tensor([10, 500, 961, 999])]
    blind = torch.tensor([False, False, True, True])
    noisy, target = noised(latents, noise, a, blind)
    s = a.view(-1, 1, 1, 1, 1)
    assert torch.allclose((noisy - (1 - s).sqrt() * target) / s.sqrt(), latents, rtol=0, atol=1e-9)
    assert torch.equal(noisy[2:], noise[2:])
    assert torch.equal(target[:2], noise[:2])
    assert torch.allclose(noisy[:2], s[:2].sqrt() * latents[:2] + (1 - s[:2]).sqrt() * noise[:2])


def test_a_backwards_input_holds_the_clip_reversed_and_its_target_leaves_the_real_clip() -> None:
    """float64, one call: where `backwards`, the input is the clip played backwards, noised, and the
    clean clip implied by (input, target) is still the real one; elsewhere the target is the noise
    itself, bit for bit (what stage 2 trains on)."""
    from animdiff.demo.train import alphas_cumprod, noised

    generator = torch.Generator().manual_seed(1)
    latents = torch.randn((4, 4, 16, 8, 8), generator=generator, dtype=torch.float64)
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float64)
    a = alphas_cumprod().double()[torch.tensor([300, 300, 700, 999])]
    backwards = torch.tensor([True, False, True, True])
    blind = torch.tensor([False, False, False, True])
    noisy, target = noised(latents, noise, a, blind, backwards=backwards)
    s = a.view(-1, 1, 1, 1, 1)
    assert torch.allclose((noisy - (1 - s).sqrt() * target) / s.sqrt(), latents, rtol=0, atol=1e-9)
    expected = s.sqrt() * latents.flip(2) + (1 - s).sqrt() * noise
    assert torch.equal(noisy[[0, 2]], expected[[0, 2]])
    assert torch.equal(target[1], noise[1]) and torch.equal(noisy[3], noise[3])  # blind wins
    assert not torch.allclose(target[0], noise[0])
    plain = noised(latents, noise, a, torch.zeros(4, dtype=torch.bool))
    again = noised(
        latents, noise, a, torch.zeros(4, dtype=torch.bool), backwards=torch.zeros(4, dtype=torch.bool)
    )
    assert all(torch.equal(x, y) for x, y in zip(plain, again, strict=True))


def test_stage_3_takes_its_own_blind_and_cross_settings() -> None:
    """`--focus-blind-above`, `--focus-cross-spread` and `--focus-high-noise-power` reach the
    objective, the data and the timesteps stage 3 draws, while stage 2 keeps its own values."""
    from animdiff.demo.train import focus_settings

    settings = TrainSettings(
        focus_blind_above=950,
        focus_cross_spread=3.0,
        focus_high_noise_power=0.25,
        focus_reverse_above=300,
        focus_wrap=True,
        focus_pick=True,
    )
    stage_2 = (settings.blind_above, settings.cross_spread, settings.high_noise_power)
    assert stage_2 == (1000, None, 0.5)
    assert (settings.reverse_above, settings.wrap, settings.pick) == (1000, False, False)
    focus = focus_settings(settings)
    assert (focus.blind_above, focus.cross_spread, focus.high_noise_power) == (950, 3.0, 0.25)
    assert (focus.reverse_above, focus.wrap, focus.pick) == (300, True, True)


def test_the_training_command_line_reaches_every_setting(monkeypatch, tmp_path: Path) -> None:
    """Defaults are the shipped recipe; `none` turns an optional setting off (the full world)."""
    from animdiff.demo import train as train_module

    seen = {}
    monkeypatch.setattr(
        train_module, "train", lambda settings, out, resume: seen.update(settings=settings, out=out)
    )
    train_module.main(["--out", str(tmp_path)])
    assert seen["settings"] == TrainSettings() and seen["out"] == tmp_path
    train_module.main(
        [
            "--focus-cross-spread",
            "none",
            "--cross-spread",
            "3.5",
            "--focus-steps",
            "0",
            "--no-train-text-encoder",
            "--focus-wrap",
            "--focus-reverse-above",
            "300",
            "--focus-pick",
        ]
    )
    assert seen["settings"] == replace(
        TrainSettings(),
        focus_cross_spread=None,
        cross_spread=3.5,
        focus_steps=0,
        focus_wrap=True,
        focus_reverse_above=300,
        focus_pick=True,
    )
    with pytest.raises(SystemExit):
        train_module.main(["--focus-cross-spread", "wide"])


def test_a_picked_clip_is_the_likeliest_of_its_captions_clips_to_have_given_the_noise() -> None:
    """`suggested_clips` against the likelihood written out: the input is sqrt(a) clip + sqrt(1 - a)
    noise, so the likeliest clip is the one nearest the input after scaling by sqrt(a) (float64);
    only rows asked for change, a travel keyframe's commas name the same clips, an empty caption
    may take any clip."""
    from animdiff.demo.train import EncodedPool, suggested_clips

    generator = torch.Generator().manual_seed(0)
    shape = (4, 16, 8, 8)
    means = torch.randn((12, *shape), generator=generator, dtype=torch.float64)
    captions = ["a red ball moving right", "a red ball moving left", "a static blue square"] * 4
    pool = EncodedPool(means, torch.zeros_like(means), captions)
    rows = ["a red ball moving right", ", a red ball moving left, ", "", "a static blue square"]
    latents = torch.zeros((4, *shape), dtype=torch.float64)
    noise = torch.randn((4, *shape), generator=generator, dtype=torch.float64)
    alpha_bar = torch.tensor([0.002, 0.01, 0.3, 0.002], dtype=torch.float64)
    where = torch.tensor([True, True, True, False])
    picked = suggested_clips(pool, rows, latents, noise, alpha_bar, where)
    for row, text in enumerate(rows[:3]):
        allowed = [i for i, c in enumerate(captions) if not text or c == text.strip(", ")]
        distance = [(noise[row] - alpha_bar[row].sqrt() * means[i]).pow(2).sum().item() for i in allowed]
        nearest = allowed[min(range(len(allowed)), key=distance.__getitem__)]
        assert torch.equal(picked[row], means[nearest]), row
    assert torch.equal(picked[3], latents[3])
    # The noise decides: another draw picks another clip of the same caption for some row.
    another = torch.randn(noise.shape, generator=generator, dtype=torch.float64)
    other = suggested_clips(pool, rows, latents, another, alpha_bar, where)
    assert not torch.equal(other[:3], picked[:3])


def test_stage_4_trains_the_decoder_alone_towards_one_full_shape_between_the_averaged_places(
    tmp_path: Path,
) -> None:
    """The encoder (so the latent space the UNet learnt), the UNet, the motion module and the text
    encoder keep their bytes; the target of an average is one shape at the weighted place."""
    import numpy as np

    from animdiff.demo import data
    from animdiff.demo.train import decoder_example, frame_at, load_demo

    spec = data.random_pair(np.random.default_rng(5), static_share=0.0)[0]
    clip = data.render(spec)
    for frame in (0, 7, 15):
        np.testing.assert_array_equal(frame_at(spec, frame), clip[frame])
    settings = TrainSettings(decoder_clean_share=0.0, decoder_max_gap=4.0)
    rng = np.random.default_rng(1)
    for _ in range(20):
        example = decoder_example(settings, rng)
        assert 0 <= example.weight <= 1 and settings.decoder_fade <= example.fade <= 1
        shapes = [
            np.abs(f - f[:, :1, :1]).max(axis=0) > 0.5
            for f in (example.first, example.second, example.target)
        ]
        centres = [np.argwhere(shape).mean(axis=0) for shape in shapes]
        between = example.weight * centres[0] + (1 - example.weight) * centres[1]
        assert np.abs(centres[2] - between).max() < 0.75  # pixel-rounded centres of the same shape
        masses = [np.abs(f - f[:, :1, :1]).sum() for f in (example.first, example.target)]
        assert masses[1] == pytest.approx(masses[0], rel=0.02)  # one shape at full strength

    source = tmp_path / "before"
    demo.write_weights(demo.build(seed=6), source)
    written = train(
        TrainSettings(threads=1, focus_steps=0, decoder_steps=2, decoder_batch=2), tmp_path / "after", source
    )
    before, after = load_demo(source), load_demo(tmp_path / "after")
    for name in ("unet", "text_encoder", "motion"):
        _same(getattr(after, name), getattr(before, name))
    _same(after.vae.encoder, before.vae.encoder)
    _same(after.vae.quant_conv, before.vae.quant_conv)
    assert not torch.equal(after.vae.decoder.conv_out.weight, before.vae.decoder.conv_out.weight)
    assert written["motion_module"].read_bytes() == (source / "AnimateDiff" / demo.MOTION_NAME).read_bytes()
