"""Loading users' files: exact tensors, safe unpickling, clear errors, no network."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from animdiff.errors import ModelFileError, ModelTypeError, OfflineError
from animdiff.models import convert
from animdiff.models.files import read_state_dict
from animdiff.models.load import load_checkpoint, load_motion_module
from animdiff.testing import layouts
from animdiff.testing.factory import (
    TINY_NORM_GROUPS,
    sd_checkpoint_state,
    tiny_motion_adapter,
    tiny_sd,
    write_checkpoint,
)


def assert_same_tensors(loaded: torch.nn.Module, reference: torch.nn.Module) -> None:
    a, b = loaded.state_dict(), reference.state_dict()
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def reference_sd():
    return tiny_sd()


def test_ldm_checkpoint_loads_to_the_factory_tensors(models_dir: Path, reference_sd) -> None:
    parts = load_checkpoint(models_dir / "Stable-diffusion" / "tiny-sd15.safetensors")
    assert_same_tensors(parts.unet, reference_sd.unet)
    assert_same_tensors(parts.vae, reference_sd.vae)
    assert_same_tensors(parts.text_encoder, reference_sd.text_encoder)
    assert list(parts.unet.config.block_out_channels) == [32, 32, 64, 64]
    assert parts.vae.config.scaling_factor == pytest.approx(0.18215)


def test_loader_rebuilds_the_norm_groups_the_files_were_written_with(animator, tiny_params) -> None:
    """No file stores its GroupNorm group count, and equal tensors under other groups compute
    something else: the loader must arrive at the factory's count from the widths alone."""
    models = animator.load(tiny_params())
    loaded = (
        models.parts.unet.config.norm_num_groups,
        models.parts.vae.config.norm_num_groups,
        models.motion.adapter.config.motion_norm_num_groups,
    )
    assert loaded == (TINY_NORM_GROUPS,) * 3
    motion_norms = {
        m.num_groups for n, m in models.unet.named_modules() if n.endswith("motion_modules.0.norm.norm")
    }
    assert motion_norms == {TINY_NORM_GROUPS}


def test_published_widths_keep_sd_32_norm_groups() -> None:
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel

    with torch.device("meta"):  # the published architectures' shapes, without their memory
        unet = UNet2DConditionModel(**convert.shipped_config("sd15_unet.json"))
        vae = AutoencoderKL(**convert.shipped_config("sd15_vae.json"))
        adapter = MotionAdapter(**convert.shipped_config("motion_adapter.json"))
    checkpoint = {
        **layouts.unet_to_ldm(unet.state_dict(), unet.config),
        **layouts.vae_to_ldm(vae.state_dict(), vae.config),
    }
    motion = layouts.motion_to_guoyww(adapter.state_dict())
    assert convert.unet_config_from_ldm(checkpoint)["norm_num_groups"] == 32
    assert convert.vae_config_from_ldm(checkpoint)["norm_num_groups"] == 32
    assert convert.motion_config_from_guoyww(motion, 32)["motion_norm_num_groups"] == 32


def test_lightning_ckpt_loads_through_safe_unpickling(tmp_path: Path, reference_sd) -> None:
    path = write_checkpoint(tmp_path / "model.ckpt", sd_checkpoint_state(reference_sd))
    parts = load_checkpoint(path)
    assert_same_tensors(parts.unet, reference_sd.unet)


def test_flat_clip_layout_is_accepted(tmp_path: Path, reference_sd) -> None:
    state = {
        k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
        for k, v in sd_checkpoint_state(reference_sd).items()
    }
    parts = load_checkpoint(write_checkpoint(tmp_path / "flat.safetensors", state))
    assert_same_tensors(parts.text_encoder, reference_sd.text_encoder)


@pytest.mark.parametrize(
    ("name", "version"),
    [("tiny-mm-v1.ckpt", "v1"), ("tiny-mm-v2.ckpt", "v2"), ("tiny-mm-v3.safetensors", "v3")],
)
def test_motion_modules_load_exactly(models_dir: Path, name: str, version: str) -> None:
    module = load_motion_module(models_dir / "AnimateDiff" / name)
    assert_same_tensors(module.adapter, tiny_motion_adapter(version))
    assert module.pe_length == (24 if version == "v1" else 32)


def test_missing_keys_are_named(tmp_path: Path, reference_sd) -> None:
    state = sd_checkpoint_state(reference_sd)
    del state["model.diffusion_model.output_blocks.2.1.conv.weight"]
    path = write_checkpoint(tmp_path / "incomplete.safetensors", state)
    with pytest.raises(
        ModelFileError, match=r"incomplete\.safetensors.*UNet.*missing \(up_blocks\.0\.upsamplers"
    ):
        load_checkpoint(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_truncated_files_are_reported_as_damaged(tmp_path: Path, models_dir: Path, suffix: str) -> None:
    source = (
        models_dir
        / "AnimateDiff"
        / ("tiny-mm-v3.safetensors" if suffix == ".safetensors" else "tiny-mm-v2.ckpt")
    )
    data = source.read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=rf"cut\{suffix}.*damaged"):
        load_motion_module(path)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_with_code_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(ModelFileError, match=r"evil\.ckpt: refused to load"):
        read_state_dict(path)


def test_wrong_kinds_are_named(models_dir: Path, tmp_path: Path) -> None:
    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 64)}, str(lora))
    with pytest.raises(ModelTypeError, match=r"style\.safetensors is a LoRA \(SD1\.5\), not a motion module"):
        load_motion_module(lora)
    with pytest.raises(ModelTypeError, match=r"tiny-mm-sdxl-beta\.safetensors is an SDXL motion module"):
        load_motion_module(models_dir / "AnimateDiff" / "tiny-mm-sdxl-beta.safetensors")
    with pytest.raises(ModelTypeError, match="HotShot-XL"):
        load_motion_module(models_dir / "AnimateDiff" / "tiny-hotshotxl.safetensors")
    assert load_motion_module(models_dir / "AnimateDiff" / "tiny-animatelcm.safetensors").pe_length == 64
    with pytest.raises(
        ModelTypeError, match=r"tiny-mm-v2\.ckpt is a motion module v2, not a Stable Diffusion checkpoint"
    ):
        load_checkpoint(models_dir / "AnimateDiff" / "tiny-mm-v2.ckpt")


def test_local_loading_never_opens_a_socket(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access during local loading")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    load_checkpoint(models_dir / "Stable-diffusion" / "tiny-sd15.safetensors")
    load_motion_module(models_dir / "AnimateDiff" / "tiny-mm-v2.ckpt")


def _can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _can_unshare(), reason="needs `unshare -n` (network namespaces)")
def test_loading_works_without_a_network_namespace(models_dir: Path) -> None:
    code = (
        "import sys; from pathlib import Path; "
        "from animdiff.models.load import load_checkpoint, load_motion_module; "
        "d = Path(sys.argv[1]); load_checkpoint(d / 'Stable-diffusion/tiny-sd15.safetensors'); "
        "load_motion_module(d / 'AnimateDiff/tiny-mm-v3.safetensors'); print('loaded')"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k != "HF_HUB_OFFLINE"}
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", code, str(models_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "loaded" in done.stdout


def test_hub_id_fails_fast_when_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from animdiff.models import hub

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(OfflineError, match="cannot be reached"):
        hub.fetch_checkpoint("someone/some-model")


def test_diffusers_folder_loads(tmp_path: Path, reference_sd) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from animdiff.models.tokenizer import clip_tokenizer

    folder = tmp_path / "tiny-diffusers"
    StableDiffusionPipeline(
        vae=reference_sd.vae, text_encoder=reference_sd.text_encoder, tokenizer=clip_tokenizer(),
        unet=reference_sd.unet, scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)  # fmt: skip
    parts = load_checkpoint(folder)
    assert_same_tensors(parts.unet, reference_sd.unet)
    assert_same_tensors(parts.vae, reference_sd.vae)
    assert_same_tensors(parts.text_encoder, reference_sd.text_encoder)
    assert parts.tokenizer(["a corgi"]) == [[320, 31320]]  # the folder's own tokenizer files
