"""SDXL checkpoints and SDXL motion modules load offline to exactly the tensors they were written from."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from animdiff.errors import ModelFileError, ModelTypeError, NotSupportedYetError
from animdiff.models.detect import Kind, detect_file
from animdiff.models.files import read_state_dict
from animdiff.models.motion_xl import (
    FAMILIES,
    LAYOUT_GUOYWW,
    LAYOUT_HOTSHOT,
    load_xl_motion_module,
    require_same_family,
    require_same_widths,
)
from animdiff.models.sdxl import OPEN_CLIP_PREFIX, load_sdxl_checkpoint
from animdiff.testing.factory import (
    TINY_NORM_GROUPS,
    motion_module_state,
    sd_checkpoint_state,
    tiny_sd,
    write_checkpoint,
    write_motion_module,
)
from animdiff.testing.sdxl import (
    TinySDXL,
    sdxl_checkpoint_state,
    tiny_sdxl,
    tiny_xl_adapter,
    write_tiny_sdxl_files,
    write_tiny_sdxl_folder,
)


@pytest.fixture(scope="module")
def reference() -> TinySDXL:
    return tiny_sdxl()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, reference: TinySDXL) -> dict[str, Path]:
    return write_tiny_sdxl_files(tmp_path_factory.mktemp("models"), reference)


@pytest.fixture(scope="module")
def loaded(files: dict[str, Path]):
    return load_sdxl_checkpoint(files["sdxl"])


def assert_same_tensors(loaded: torch.nn.Module, reference: torch.nn.Module) -> None:
    got, want = loaded.state_dict(), reference.state_dict()
    assert sorted(got) == sorted(want)
    different = [k for k in want if got[k].dtype != want[k].dtype or not torch.equal(got[k], want[k])]
    assert not different, different[:5]


def _tokens(generator: torch.Generator, batch: int = 2, length: int = 77) -> torch.Tensor:
    """CLIP-style ids: start, words, end, then tokenizer_2's padding ('!', id 0)."""
    ids = torch.zeros(batch, length, dtype=torch.long)
    for row, words in enumerate((5, 30)[:batch]):
        ids[row, 0] = 49406
        ids[row, 1 : 1 + words] = torch.randint(1, 49400, (words,), generator=generator)
        ids[row, 1 + words] = 49407
    return ids


# --- the file itself --------------------------------------------------------------------------------


def test_tiny_file_has_the_sgm_layout(files: dict[str, Path]) -> None:
    keys = set(read_state_dict(files["sdxl"]))
    assert detect_file(files["sdxl"]).kind is Kind.SDXL
    for key in (
        "model.diffusion_model.label_emb.0.0.weight",
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.middle_block.1.transformer_blocks.1.attn1.to_q.weight",
        "first_stage_model.decoder.up.0.block.0.conv1.weight",
        "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
        "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
        OPEN_CLIP_PREFIX + "transformer.resblocks.0.attn.in_proj_weight",
        OPEN_CLIP_PREFIX + "transformer.resblocks.0.ln_1.weight",
        OPEN_CLIP_PREFIX + "transformer.resblocks.0.mlp.c_fc.weight",
        OPEN_CLIP_PREFIX + "token_embedding.weight",
        OPEN_CLIP_PREFIX + "positional_embedding",
        OPEN_CLIP_PREFIX + "ln_final.weight",
        OPEN_CLIP_PREFIX + "text_projection",
        OPEN_CLIP_PREFIX + "logit_scale",
    ):
        assert key in keys, key
    # Transformer depth 2 at the last level: the mid block is as deep, and no deeper.
    assert "model.diffusion_model.middle_block.1.transformer_blocks.2.attn1.to_q.weight" not in keys
    assert not any(k.startswith(OPEN_CLIP_PREFIX) and ("q_proj" in k or "text_model" in k) for k in keys)


# --- the checkpoint -------------------------------------------------------------------------------------


def test_sgm_checkpoint_loads_to_the_reference_tensors(loaded, reference: TinySDXL) -> None:
    assert_same_tensors(loaded.unet, reference.unet)
    assert_same_tensors(loaded.vae, reference.vae)
    assert_same_tensors(loaded.text_encoder, reference.text_encoder)
    assert_same_tensors(loaded.text_encoder_2, reference.text_encoder_2)
    assert loaded.kind is Kind.SDXL
    config = loaded.unet.config
    assert config.addition_embed_type == "text_time"
    assert list(config.transformer_layers_per_block) == [1, 1, 2]
    assert list(config.down_block_types) == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert config.addition_time_embed_dim == reference.unet.config.addition_time_embed_dim
    assert config.norm_num_groups == loaded.vae.config.norm_num_groups == TINY_NORM_GROUPS
    assert loaded.vae.config.scaling_factor == pytest.approx(0.13025)
    assert loaded.vae.dtype == torch.float32
    assert loaded.text_encoder_2.config.hidden_act == "gelu"
    assert loaded.text_encoder.config.hidden_act == "quick_gelu"


def test_every_part_computes_what_the_reference_computes(loaded, reference: TinySDXL) -> None:
    generator = torch.Generator().manual_seed(5)
    ids = _tokens(generator)
    with torch.no_grad():
        for ours, theirs in ((loaded.text_encoder, reference.text_encoder),):
            a, b = ours(ids, output_hidden_states=True), theirs(ids, output_hidden_states=True)
            assert torch.equal(a.hidden_states[-2], b.hidden_states[-2])  # what A1111 takes from CLIP-L
        a = loaded.text_encoder_2(ids, output_hidden_states=True)
        b = reference.text_encoder_2(ids, output_hidden_states=True)
        assert torch.equal(a.hidden_states[-2], b.hidden_states[-2])
        assert torch.equal(a.text_embeds, b.text_embeds)  # the pooled embedding, projected
        context = torch.randn(2, 77, loaded.unet.config.cross_attention_dim, generator=generator)
        sample = torch.randn(2, 4, 8, 8, generator=generator)
        extra = {
            "text_embeds": torch.randn(2, a.text_embeds.shape[1], generator=generator),
            "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2),
        }
        timestep = torch.tensor([500, 20])
        got = loaded.unet(sample, timestep, context, added_cond_kwargs=extra).sample
        want = reference.unet(sample, timestep, context, added_cond_kwargs=extra).sample
        assert torch.equal(got, want)
        latents = torch.randn(1, 4, 8, 8, generator=generator)
        assert torch.equal(loaded.vae.decode(latents).sample, reference.vae.decode(latents).sample)


def _open_clip_encode(state: dict[str, torch.Tensor], ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCLIP's text tower computed straight from the file's tensors, as SGM runs it for SDXL.

    Returns (the penultimate layer's output, ln_final(last)[argmax id] @ text_projection).
    """

    def w(name: str) -> torch.Tensor:
        return state[OPEN_CLIP_PREFIX + name].float()

    width = w("token_embedding.weight").shape[1]
    heads = max(1, width // 64)
    x = F.embedding(ids, w("token_embedding.weight")) + w("positional_embedding")[: ids.shape[1]]
    mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)
    layers = len(
        {k.split(".")[2] for k in (n.removeprefix(OPEN_CLIP_PREFIX) for n in state) if "resblocks" in k}
    )
    penultimate = x
    for i in range(layers):
        if i == layers - 1:
            penultimate = x
        p = f"transformer.resblocks.{i}."
        h = F.layer_norm(x, (width,), w(p + "ln_1.weight"), w(p + "ln_1.bias"))
        q, k, v = F.linear(h, w(p + "attn.in_proj_weight"), w(p + "attn.in_proj_bias")).chunk(3, dim=-1)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (heads, width // heads)).transpose(1, 2)

        scores = split(q) @ split(k).transpose(-1, -2) / (width // heads) ** 0.5 + mask
        attended = (scores.softmax(-1) @ split(v)).transpose(1, 2).flatten(2)
        x = x + F.linear(attended, w(p + "attn.out_proj.weight"), w(p + "attn.out_proj.bias"))
        h = F.layer_norm(x, (width,), w(p + "ln_2.weight"), w(p + "ln_2.bias"))
        h = F.gelu(F.linear(h, w(p + "mlp.c_fc.weight"), w(p + "mlp.c_fc.bias")))
        x = x + F.linear(h, w(p + "mlp.c_proj.weight"), w(p + "mlp.c_proj.bias"))
    last = F.layer_norm(x, (width,), w("ln_final.weight"), w("ln_final.bias"))
    pooled = last[torch.arange(ids.shape[0]), ids.argmax(dim=-1)] @ w("text_projection")
    return penultimate, pooled


@pytest.mark.numerics
def test_second_encoder_computes_what_open_clip_computes_from_the_file(files, loaded) -> None:
    """Independent of the writer: fused q/k/v order and the transposed projection, from raw keys."""
    state = read_state_dict(files["sdxl"])
    ids = _tokens(torch.Generator().manual_seed(9))
    want_hidden, want_pooled = _open_clip_encode(state, ids)
    with torch.no_grad():
        out = loaded.text_encoder_2(ids, output_hidden_states=True)
    torch.testing.assert_close(out.hidden_states[-2], want_hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.text_embeds, want_pooled, atol=1e-5, rtol=1e-5)


def test_lightning_ckpt_and_half_precision_load(tmp_path: Path, reference: TinySDXL) -> None:
    path = write_checkpoint(tmp_path / "sdxl.ckpt", sdxl_checkpoint_state(reference))
    parts = load_sdxl_checkpoint(path, dtype=torch.float16)
    assert parts.unet.dtype == torch.float16 and parts.text_encoder_2.dtype == torch.float16
    assert parts.vae.dtype == torch.float32  # SDXL's VAE overflows in float16
    assert torch.equal(parts.unet.conv_in.weight, reference.unet.conv_in.weight.half())


def test_diffusers_folder_loads(tmp_path: Path, reference: TinySDXL) -> None:
    folder = write_tiny_sdxl_folder(tmp_path / "tiny-sdxl", reference)
    parts = load_sdxl_checkpoint(folder)
    assert parts.kind is Kind.DIFFUSERS_SDXL
    assert_same_tensors(parts.unet, reference.unet)
    assert_same_tensors(parts.vae, reference.vae)
    assert_same_tensors(parts.text_encoder, reference.text_encoder)
    assert_same_tensors(parts.text_encoder_2, reference.text_encoder_2)


def test_sd15_checkpoint_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path / "tiny-sd15.safetensors", sd_checkpoint_state(tiny_sd()))
    with pytest.raises(ModelTypeError, match=r"tiny-sd15\.safetensors is an SD1\.5 checkpoint, not an SDXL"):
        load_sdxl_checkpoint(path)


def test_refiner_is_refused_naming_the_file(tmp_path: Path, reference: TinySDXL) -> None:
    """The refiner's layout: OpenCLIP bigG alone, in the first embedder slot."""
    state = {
        k.replace("conditioner.embedders.1.", "conditioner.embedders.0."): v
        for k, v in sdxl_checkpoint_state(reference).items()
        if not k.startswith("conditioner.embedders.0.")
    }
    path = write_checkpoint(tmp_path / "sd_xl_refiner_1.0.safetensors", state)
    with pytest.raises(ModelTypeError, match=r"sd_xl_refiner_1\.0\.safetensors is an SDXL refiner"):
        load_sdxl_checkpoint(path)


def test_missing_open_clip_keys_are_named(tmp_path: Path, reference: TinySDXL) -> None:
    state = sdxl_checkpoint_state(reference)
    del state[OPEN_CLIP_PREFIX + "transformer.resblocks.1.mlp.c_fc.bias"]
    state[OPEN_CLIP_PREFIX + "transformer.resblocks.1.mlp.c_gate.weight"] = torch.zeros(2)
    path = write_checkpoint(tmp_path / "broken-sdxl.safetensors", state)
    with pytest.raises(ModelFileError, match=r"broken-sdxl\.safetensors.*resblocks\.1\.mlp\.c_gate"):
        load_sdxl_checkpoint(path)
    del state[OPEN_CLIP_PREFIX + "transformer.resblocks.1.mlp.c_gate.weight"]
    path = write_checkpoint(tmp_path / "short-sdxl.safetensors", state)
    with pytest.raises(ModelFileError, match=r"short-sdxl\.safetensors.*missing.*layers\.1\.mlp\.fc1\.bias"):
        load_sdxl_checkpoint(path)


# --- motion modules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "family", "kind", "pe", "layout"),
    [
        ("mm-sdxl-beta-ckpt", "sdxl-beta", Kind.MM_SDXL_BETA, 32, LAYOUT_GUOYWW),
        ("mm-hotshot", "hotshot", Kind.MM_HOTSHOT, 24, LAYOUT_HOTSHOT),
        ("mm-hotshot-rekeyed", "hotshot", Kind.MM_HOTSHOT, 24, LAYOUT_GUOYWW),
    ],
)
def test_xl_motion_modules_load_exactly(
    files, name: str, family: str, kind: Kind, pe: int, layout: str
) -> None:
    module = load_xl_motion_module(files[name])
    assert_same_tensors(module.adapter, tiny_xl_adapter(family))
    assert (module.kind, module.pe_length, module.layout) == (kind, pe, layout)
    assert module.family is FAMILIES[kind]
    config = module.adapter.config
    assert list(config.block_out_channels) == [32, 64, 64]
    assert not config.use_motion_mid_block
    assert config.motion_norm_num_groups == TINY_NORM_GROUPS


def test_both_hotshot_layouts_give_identical_adapters(files) -> None:
    published = load_xl_motion_module(files["mm-hotshot"])
    rekeyed = load_xl_motion_module(files["mm-hotshot-rekeyed"])
    assert_same_tensors(published.adapter, rekeyed.adapter)
    assert dict(published.adapter.config) == dict(rekeyed.adapter.config)
    assert published.family == rekeyed.family


def test_family_data_follows_the_reference() -> None:
    xl, hotshot = FAMILIES[Kind.MM_SDXL_BETA], FAMILIES[Kind.MM_HOTSHOT]
    assert (xl.betas.beta_schedule, xl.betas.beta_start, xl.betas.beta_end) == (
        "scaled_linear",
        0.00085,
        0.020,
    )
    assert (hotshot.betas.beta_schedule, hotshot.betas.beta_start, hotshot.betas.beta_end) == (
        "linear",
        0.00085,
        0.012,
    )
    assert (xl.trained_length, xl.max_context, xl.cross_frame_group_norm) == (16, 32, False)
    assert (hotshot.trained_length, hotshot.max_context, hotshot.cross_frame_group_norm) == (8, 24, True)

    def sigma_max(family) -> float:
        alpha = float(family.betas.alphas_cumprod()[-1])
        return ((1 - alpha) / alpha) ** 0.5

    assert sigma_max(xl) == pytest.approx(65.9, abs=0.1)  # reference-facts: sigma_max ~65.9 and ~25.1
    assert sigma_max(hotshot) == pytest.approx(25.1, abs=0.1)


def test_sd15_module_and_other_files_are_refused_naming_them(tmp_path: Path, files) -> None:
    v2 = write_motion_module(tmp_path / "mm_sd_v15_v2.ckpt", motion_module_state("v2"))
    with pytest.raises(ModelTypeError, match=r"mm_sd_v15_v2\.ckpt is a motion module v2 for SD1\.5"):
        load_xl_motion_module(v2)
    with pytest.raises(
        ModelTypeError, match=r"tiny-sdxl\.safetensors is an SDXL checkpoint, not an SDXL motion"
    ):
        load_xl_motion_module(files["sdxl"])
    unknown = motion_module_state("sdxl-beta")
    unknown = {k: v[:, :16] if k.endswith(".pe") else v for k, v in unknown.items()}  # pe 16: no family
    path = write_motion_module(tmp_path / "odd.safetensors", unknown)
    with pytest.raises(
        NotSupportedYetError, match=r"odd\.safetensors is a motion module \(unknown version\)"
    ):
        load_xl_motion_module(path)


def test_damaged_hotshot_file_is_named(tmp_path: Path) -> None:
    state = motion_module_state("hotshot")
    key = next(k for k in state if k.endswith("ff.net.2.weight"))
    del state[key]
    path = write_motion_module(tmp_path / "hsxl_temporal_layers.safetensors", state)
    with pytest.raises(ModelFileError, match=r"hsxl_temporal_layers\.safetensors.*missing"):
        load_xl_motion_module(path)


def test_module_and_checkpoint_mismatches_name_both_files(files, loaded) -> None:
    sdxl_module = load_xl_motion_module(files["mm-sdxl-beta-ckpt"])
    require_same_family(sdxl_module.path, sdxl_module.kind, files["sdxl"], Kind.SDXL)
    require_same_widths(sdxl_module, loaded.unet.config, files["sdxl"])
    with pytest.raises(ModelTypeError, match=r"mm_sd_v15_v2\.ckpt is an SD1\.5 motion module .*tiny-sdxl"):
        require_same_family(Path("mm_sd_v15_v2.ckpt"), Kind.MM_V2, files["sdxl"], Kind.SDXL)
    with pytest.raises(
        ModelTypeError, match=r"tiny-mm-sdxl-v10-beta\.ckpt is an SDXL motion module .*v1-5\.ckpt"
    ):
        require_same_family(sdxl_module.path, sdxl_module.kind, Path("v1-5.ckpt"), Kind.SD15)
    wide = type(loaded.unet.config)({**loaded.unet.config, "block_out_channels": [320, 640, 1280]})
    with pytest.raises(
        ModelTypeError, match=r"tiny-mm-sdxl-v10-beta\.ckpt .*\[32, 64, 64\].*tiny-sdxl.*1280"
    ):
        require_same_widths(sdxl_module, wide, files["sdxl"])


def test_loading_never_opens_a_socket(files, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access during local loading")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    load_sdxl_checkpoint(files["sdxl"])
    for name in ("mm-sdxl-beta-ckpt", "mm-hotshot", "mm-hotshot-rekeyed"):
        load_xl_motion_module(files[name])


def test_published_shapes_give_back_the_published_configs() -> None:
    """Real-size SDXL and AnimateDiff-XL shapes (on the meta device) read back to the shipped
    architecture: SGM's 64-wide heads, depths 1/2/10, the 256-wide size embedding, 32 norm groups."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel

    from animdiff.models.convert import shipped_config
    from animdiff.models.motion_xl import motion_config_xl
    from animdiff.models.sdxl import unet_config_from_sgm, vae_config_from_sgm
    from animdiff.testing.layouts import motion_to_guoyww, vae_to_ldm
    from animdiff.testing.sdxl import unet_to_sgm

    unet_config, vae_config = shipped_config("sdxl_unet.json"), shipped_config("sdxl_vae.json")
    adapter_config = shipped_config("sdxl_motion_adapter.json")
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
        adapter = MotionAdapter(**adapter_config)
    state = {**unet_to_sgm(unet.state_dict(), unet.config), **vae_to_ldm(vae.state_dict(), vae.config)}
    assert unet_config_from_sgm(state, pooled_width=1280) == unet_config
    assert vae_config_from_sgm(state) == vae_config
    assert motion_config_xl(motion_to_guoyww(adapter.state_dict()), 32) == adapter_config


@pytest.mark.parametrize(("name", "family"), [("mm-sdxl-beta-ckpt", "sdxl-beta"), ("mm-hotshot", "hotshot")])
def test_sdxl_unet_with_motion_modules_runs_as_diffusers_builds_it(
    files, loaded, reference: TinySDXL, name: str, family: str
) -> None:
    """Our motion UNet equals diffusers' `UNetMotionModel.from_unet2d` on the same weights, once the
    size/crop embedding is copied: diffusers 0.42 leaves `add_embedding` freshly initialised there
    (diffusers PR #6721 review, deferred), so AnimateDiffSDXLPipeline runs with a random one.

    Compared in float64: in float32 the two came out bit for bit equal until a change of installed
    packages sent one Linear's input through another matmul path (5.7e-7 apart, the same weights
    and inputs); the claim is the same arithmetic, which float64 shows to 1e-12."""
    from diffusers import UNetMotionModel

    from animdiff.models.load import build_motion_unet

    module = load_xl_motion_module(files[name])
    ours = build_motion_unet(loaded.unet, module.adapter, path=module.path)
    theirs = UNetMotionModel.from_unet2d(reference.unet, tiny_xl_adapter(family)).eval()
    assert not torch.equal(theirs.add_embedding.linear_1.weight, reference.unet.add_embedding.linear_1.weight)
    theirs.add_embedding.load_state_dict(reference.unet.add_embedding.state_dict())
    assert_same_tensors(ours, theirs)
    frames = 4
    generator = torch.Generator().manual_seed(3)
    sample = torch.randn(1, 4, frames, 8, 8, generator=generator, dtype=torch.float64)
    context = torch.randn(
        frames, 77, loaded.unet.config.cross_attention_dim, generator=generator, dtype=torch.float64
    )
    extra = {
        "text_embeds": torch.randn(
            1, loaded.text_encoder_2.config.projection_dim, generator=generator, dtype=torch.float64
        ),
        "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]], dtype=torch.float64),
    }
    with torch.no_grad():
        got = ours.double()(sample, torch.tensor(400), context, added_cond_kwargs=extra).sample
        want = theirs.double()(sample, torch.tensor(400), context, added_cond_kwargs=extra).sample
    assert got.dtype == torch.float64
    assert torch.allclose(got, want, rtol=0, atol=1e-12), (got - want).abs().max()


def test_tiny_sdxl_lora_fits_the_tiny_sdxl(files, reference: TinySDXL) -> None:
    """kohya's SDXL names (LDM-named UNet layers, `lora_te1_` / `lora_te2_`) at the tiny widths."""
    from animdiff.models.ldm_names import ldm_unet_name

    assert detect_file(files["lora-sdxl-tiny"]).kind is Kind.LORA_SDXL
    config = reference.unet.config
    modules = {
        "lora_unet_" + ldm_unet_name(n, config.layers_per_block, config.up_block_types).replace(".", "_"): m
        for n, m in reference.unet.named_modules()
        if n.endswith(("to_q", "to_k", "to_v", "to_out.0"))
    }
    for prefix, encoder in (("lora_te1_", reference.text_encoder), ("lora_te2_", reference.text_encoder_2)):
        for n, m in encoder.named_modules():
            modules[prefix + "text_model_" + n.removeprefix("text_model.").replace(".", "_")] = m
    state = read_state_dict(files["lora-sdxl-tiny"])
    bases = {k.split(".")[0] for k in state}  # kohya's layer names have no dots
    assert {b.split("_")[1] for b in bases} == {"unet", "te1", "te2"}
    for base in bases:
        out_features, in_features = modules[base].weight.shape
        assert state[f"{base}.lora_down.weight"].shape[1] == in_features
        assert state[f"{base}.lora_up.weight"].shape[0] == out_features
