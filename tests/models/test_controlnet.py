"""ControlNet files load offline to exactly the tensors they were written from, in every layout."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from safetensors.torch import save_file

from animdiff.errors import ModelFileError, ModelTypeError, NotSupportedYetError
from animdiff.models.controlnet import load_controlnet
from animdiff.models.detect import Kind, detect, detect_file
from animdiff.testing.controlnet import (
    controlnet_file_state,
    tiny_controlnet,
    tiny_sdxl_controlnet,
    write_controlnet,
    write_tiny_controlnets,
)
from animdiff.testing.factory import tiny_unet_config
from animdiff.testing.layouts import ldm_schedule_buffers


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tiny_controlnets(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def reference() -> dict[str, ControlNetModel]:
    return {variant: tiny_controlnet(variant) for variant in ("canny", "inpaint")}


def assert_same_tensors(loaded: torch.nn.Module, expected: torch.nn.Module) -> None:
    a, b = loaded.state_dict(), expected.state_dict()
    assert set(a) == set(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def test_tiny_files_use_the_published_names(files: dict[str, Path]) -> None:
    from safetensors import safe_open

    with safe_open(str(files["controlnet-canny"]), "pt") as handle:
        canny = set(handle.keys())
    with safe_open(str(files["controlnet-inpaint"]), "pt") as handle:
        inpaint = set(handle.keys())
    for key in (
        "input_hint_block.0.weight",
        "input_hint_block.14.weight",
        "zero_convs.11.0.weight",
        "middle_block_out.0.weight",
        "middle_block.1.transformer_blocks.0.attn2.to_k.weight",
        "input_blocks.3.0.op.weight",
        "time_embed.2.weight",
    ):
        assert "control_model." + key in canny
        assert key in inpaint
    assert {k.removeprefix("control_model.") for k in canny} == inpaint


def test_prefixed_tiny_file_is_an_sd15_controlnet(files: dict[str, Path]) -> None:
    assert detect_file(files["controlnet-canny"]).kind is Kind.CONTROLNET_SD15


def test_bare_tiny_file_is_an_sd15_controlnet(files: dict[str, Path]) -> None:
    assert detect_file(files["controlnet-inpaint"]).kind is Kind.CONTROLNET_SD15


@pytest.mark.parametrize("variant", ["canny", "inpaint"])
def test_tiny_files_load_to_the_reference_tensors(files, reference, variant: str) -> None:
    loaded = load_controlnet(files[f"controlnet-{variant}"])
    assert loaded.kind is Kind.CONTROLNET_SD15
    assert loaded.hint_channels == 3
    assert_same_tensors(loaded.model, reference[variant])
    assert loaded.model.config.block_out_channels == reference[variant].config.block_out_channels
    assert not loaded.model.config.global_pool_conditions


@pytest.mark.parametrize("variant", ["canny", "inpaint"])
def test_one_forward_call_matches_the_reference(files, reference, variant: str) -> None:
    loaded = load_controlnet(files[f"controlnet-{variant}"], dtype=torch.float64).model
    expected = tiny_controlnet(variant).double()
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 8, 8, generator=generator, dtype=torch.float64)
    text = torch.randn(2, 77, expected.config.cross_attention_dim, generator=generator, dtype=torch.float64)
    hint = torch.rand(2, 3, 64, 64, generator=generator, dtype=torch.float64)
    if variant == "inpaint":
        hint[:, :, 16:48, 16:48] = -1.0  # the extension marks masked pixels with -1
    args = dict(timestep=torch.tensor([500, 500]), encoder_hidden_states=text, controlnet_cond=hint)
    with torch.no_grad():
        down, mid = loaded(sample, return_dict=False, **args)
        down_ref, mid_ref = expected(sample, return_dict=False, **args)
    assert len(down) == len(down_ref) == 12
    for got, want in zip(down, down_ref, strict=True):
        assert torch.equal(got, want)
        assert got.abs().max() > 0  # the woken zero convolutions: the ControlNet does something
    assert torch.equal(mid, mid_ref)


def test_loaded_dtype_follows_the_request(files, reference) -> None:
    loaded = load_controlnet(files["controlnet-canny"], dtype=torch.float16).model
    assert all(p.dtype == torch.float16 for p in loaded.parameters())
    assert_same_tensors(loaded, reference["canny"].half())


def test_our_names_agree_with_diffusers_converter(reference) -> None:
    # An independent implementation of the same renaming: it must read our tiny files identically.
    model = reference["canny"]
    for prefix in ("control_model.", ""):
        converted = convert_controlnet_checkpoint(
            controlnet_file_state(model, prefix=prefix), dict(model.config)
        )
        expected = model.state_dict()
        assert set(converted) == set(expected)
        assert all(torch.equal(converted[k], expected[k]) for k in expected)


def _full_v10_state(model: ControlNetModel) -> dict[str, torch.Tensor]:
    """A v1.0 `control_sd15_*.pth`: the ControlNet beside (a token of) the SD checkpoint it came from."""
    return {
        **controlnet_file_state(model),
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(32, 4, 3, 3),
        "first_stage_model.encoder.conv_in.weight": torch.zeros(32, 3, 3, 3),
        "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
        **ldm_schedule_buffers(),
    }


@pytest.mark.parametrize("container", ["plain", "lightning", "full-v1.0"])
def test_pth_pickles_load_through_safe_unpickling(tmp_path: Path, reference, container: str) -> None:
    model = reference["canny"]
    path = tmp_path / "control_v11p_sd15_canny.pth"
    if container == "plain":
        write_controlnet(path, controlnet_file_state(model))
    elif container == "lightning":
        torch.save({"state_dict": controlnet_file_state(model), "global_step": 1}, path)
    else:
        torch.save({"state_dict": _full_v10_state(model)}, path)
    assert_same_tensors(load_controlnet(path).model, model)


def test_full_v10_file_is_detected_as_a_controlnet(reference) -> None:
    assert detect(shapes(_full_v10_state(reference["canny"]))).kind is Kind.CONTROLNET_SD15


def test_diffusers_folder_and_diffusers_named_file_load(tmp_path: Path, reference) -> None:
    model = reference["canny"]
    model.save_pretrained(tmp_path / "control_v11p_sd15_canny")
    loaded = load_controlnet(tmp_path / "control_v11p_sd15_canny")
    assert loaded.kind is Kind.CONTROLNET_SD15
    assert_same_tensors(loaded.model, model)
    single = tmp_path / "diffusers_canny.safetensors"
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(single))
    assert detect_file(single).kind is Kind.CONTROLNET_SD15
    assert_same_tensors(load_controlnet(single).model, model)


def test_diffusers_controlnet_folder_is_detected(tmp_path: Path, reference) -> None:
    reference["canny"].save_pretrained(tmp_path / "cn")
    assert detect_file(tmp_path / "cn").kind is Kind.CONTROLNET_SD15


def test_truncated_file_is_reported_as_damaged(tmp_path: Path, files) -> None:
    data = files["controlnet-canny"].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"cut\.safetensors.*damaged"):
        load_controlnet(path)


@pytest.mark.parametrize("prefix", ["control_model.", ""])
def test_missing_and_unexpected_keys_are_named_as_the_file_names_them(
    tmp_path: Path, reference, prefix: str
) -> None:
    state = controlnet_file_state(reference["canny"], prefix=prefix)
    del state[f"{prefix}zero_convs.3.0.weight"]
    del state[f"{prefix}input_hint_block.14.bias"]
    state[f"{prefix}input_blocks.1.1.extra.weight"] = torch.zeros(1)
    path = write_controlnet(tmp_path / "incomplete.safetensors", state)
    with pytest.raises(ModelFileError) as caught:
        load_controlnet(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: the ControlNet weights do not fit")
    assert f"2 missing ({prefix}input_hint_block.14.bias, {prefix}zero_convs.3.0.weight)" in message
    assert f"1 unexpected ({prefix}input_blocks.1.1.extra.weight)" in message


def test_wrong_shapes_are_named(tmp_path: Path, reference) -> None:
    state = controlnet_file_state(reference["canny"])
    state["control_model.zero_convs.0.0.weight"] = torch.zeros(32, 32, 3, 3)
    path = write_controlnet(tmp_path / "reshaped.safetensors", state)
    with pytest.raises(
        ModelFileError, match=r"reshaped\.safetensors.*wrong shape \(control_model\.zero_convs\.0"
    ):
        load_controlnet(path)


def test_a_file_without_the_hint_encoder_is_named_incomplete(tmp_path: Path, reference) -> None:
    state = controlnet_file_state(reference["canny"])
    state = {k: v for k, v in state.items() if "input_hint_block.0." not in k}
    path = write_controlnet(tmp_path / "no-hint.safetensors", state)
    with pytest.raises(
        ModelFileError, match=r"no-hint\.safetensors: not a complete ControlNet.*input_hint_block"
    ):
        load_controlnet(path)


def test_sdxl_controlnets_are_identified(tmp_path: Path) -> None:
    """Loading them is tests/models/test_controlnet_sdxl.py's; the original layout is refused there."""
    model = tiny_sdxl_controlnet()
    original = write_controlnet(tmp_path / "controlnet-sdxl-canny.safetensors", controlnet_file_state(model))
    assert detect_file(original).kind is Kind.CONTROLNET_SDXL
    model.save_pretrained(tmp_path / "controlnet-canny-sdxl-1.0")
    folder_weights = tmp_path / "controlnet-canny-sdxl-1.0" / "diffusion_pytorch_model.safetensors"
    assert detect_file(folder_weights).kind is Kind.CONTROLNET_SDXL
    assert load_controlnet(tmp_path / "controlnet-canny-sdxl-1.0").kind is Kind.CONTROLNET_SDXL


def test_sd2_controlnets_are_refused(tmp_path: Path) -> None:
    config = tiny_unet_config()
    config["cross_attention_dim"] = 1024
    path = write_controlnet(
        tmp_path / "controlnet-sd21-canny.safetensors",
        controlnet_file_state(tiny_controlnet("canny", config)),
    )
    with pytest.raises(ModelTypeError, match=r"SD2\.x ControlNet"):
        load_controlnet(path)


def test_other_kinds_are_named(tmp_path: Path) -> None:
    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 64)}, str(lora))
    with pytest.raises(ModelTypeError, match=r"style\.safetensors is a LoRA \(SD1\.5\), not a ControlNet"):
        load_controlnet(lora)
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    with pytest.raises(ModelTypeError, match=r"holds a UNet2DConditionModel, not a ControlNet"):
        load_controlnet(folder)


def test_difference_controlnets_are_refused(tmp_path: Path, reference) -> None:
    state = {**controlnet_file_state(reference["canny"]), "difference": torch.tensor(1.0)}
    path = write_controlnet(tmp_path / "control_canny-diff.pth", state)
    with pytest.raises(NotSupportedYetError, match=r"control_canny-diff\.pth is a 'difference' ControlNet"):
        load_controlnet(path)


def test_control_loras_are_refused(tmp_path: Path) -> None:
    state = {
        "lora_controlnet": torch.tensor([]),
        "input_hint_block.0.weight": torch.zeros(16, 3, 3, 3),
        "input_blocks.1.0.in_layers.2.up": torch.zeros(320, 128),
    }
    path = write_controlnet(tmp_path / "control-lora-canny-rank128.safetensors", state)
    with pytest.raises(NotSupportedYetError, match=r"rank128\.safetensors is a Control-LoRA"):
        load_controlnet(path)


def test_shuffle_controlnets_pool_globally(tmp_path: Path, files) -> None:
    shuffle = tmp_path / "control_v11e_sd15_shuffle.safetensors"
    shutil.copy(files["controlnet-canny"], shuffle)
    assert load_controlnet(shuffle).model.config.global_pool_conditions
    assert not load_controlnet(shuffle, global_pool=False).model.config.global_pool_conditions
    renamed = tmp_path / "my-controlnet.safetensors"
    shutil.copy(files["controlnet-canny"], renamed)
    assert not load_controlnet(renamed).model.config.global_pool_conditions
    renamed.with_suffix(".yaml").write_text(
        "model:\n  params:\n    control_stage_config:\n      params:\n        global_average_pooling: True\n"
    )
    assert load_controlnet(renamed).model.config.global_pool_conditions


def test_loading_never_opens_a_socket(files, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access during local loading")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    load_controlnet(files["controlnet-canny"])
    load_controlnet(files["controlnet-inpaint"])
