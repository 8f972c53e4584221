"""Memory counted on `meta`: the counter itself, attention as CUDA allocates it, and SDXL's job."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from animdiff.testing.memory_estimate import estimate_job, sd15_models_on_meta, sdxl_models_on_meta
from animdiff.testing.meta_memory import BLOCK, CudaAttention, LiveBytes

GiB = 2**30


def test_a_storage_counts_once_from_its_making_to_its_freeing() -> None:
    held = torch.empty(100, device="meta")  # 400 bytes: one 512-byte block
    live = LiveBytes()
    live.hold([held, held.view(10, 10)])
    assert live.current == BLOCK
    with live:
        a = torch.empty(1000, device="meta")  # 4000 bytes -> 4096
        view = a.view(10, 100)
        a.add_(1)  # in place: the same storage
        b = a * 2
        assert live.current == BLOCK + 2 * 4096
        del a, b
        assert live.current == BLOCK + 4096  # `view` keeps a's storage
        del view
    assert (live.current, live.peak) == (BLOCK, BLOCK + 2 * 4096)


def test_real_tensors_and_meta_tensors_count_the_same() -> None:
    """On meta the same operations return the same storages as on the CPU: the count is the work's."""
    torch.manual_seed(0)
    nn = torch.nn
    block = nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU(), nn.Conv2d(16, 4, 1))
    block.eval()
    peaks = []
    for device in ("cpu", "meta"):
        model = block.to(device)
        live = LiveBytes()
        with torch.no_grad(), live:
            model(torch.zeros(2, 4, 32, 32, device=device))
        peaks.append(live.peak)
    assert peaks[0] == peaks[1] > 2 * 16 * 32 * 32 * 4


def test_attention_on_meta_allocates_what_the_cuda_kernels_return() -> None:
    """Without `CudaAttention` meta falls back to the explicit attention matrix; with it, float16
    gets FlashAttention's output and float32 log-sum-exp, float32 the memory-efficient kernel's."""
    q = torch.empty(2, 8, 4096, 64, device="meta", dtype=torch.float16)
    out_bytes = q.numel() * 2
    with LiveBytes() as plain:
        F.scaled_dot_product_attention(q, q, q)
    assert plain.peak > 2 * 8 * 4096 * 4096 * 2  # the (4096 x 4096) scores, per head
    with CudaAttention(), LiveBytes() as fused:
        out = F.scaled_dot_product_attention(q, q, q)
    assert out.shape == q.shape and out.dtype == torch.float16
    # ... plus FlashAttention's two small random-state tensors (one block each).
    assert fused.peak == out_bytes + 2 * 8 * 4096 * 4 + 2 * BLOCK
    wide = torch.empty(1, 1, 4096, 512, device="meta")  # the SDXL VAE's attention: float32, 512 wide
    with CudaAttention(), LiveBytes() as efficient:
        F.scaled_dot_product_attention(wide, wide, wide)
    assert efficient.peak < 2 * wide.numel() * 4


def test_cuda_attention_leaves_real_tensors_alone() -> None:
    q = torch.randn(1, 2, 16, 8, generator=torch.Generator().manual_seed(0))
    expected = F.scaled_dot_product_attention(q, q, q)
    with CudaAttention():
        assert torch.equal(F.scaled_dot_product_attention(q, q, q), expected)


def test_sdxl_at_1024_with_16_frames_fits_24_gib_with_the_default_options() -> None:
    """The issue's target, estimated: real-size SDXL + AnimateDiff-XL, 1024x1024, a 16-frame
    window, CFG, float16 (VAE float32). The VAE's frames per call follow the size (1 here): with
    the old fixed 8 the decode alone would need over 24 GiB. Feed-forwards in one piece (as the
    reference runs them) would add over 3 GiB to the denoise."""
    models = sdxl_models_on_meta()
    default = estimate_job(models)
    # Each model's bytes in 512-byte blocks: the text encoders, the UNet with AnimateDiff-XL, the VAE.
    assert default.weights == {"encode": 1_635_442_688, "denoise": 5_609_298_944, "decode": 334_618_112}
    assert default.peak_phase == "denoise"
    assert 11 * GiB < default.peak < 12.5 * GiB
    assert estimate_job(models, vae_chunk=8).phases["decode"] > 24 * GiB
    offloaded = estimate_job(models, offload=True)
    assert offloaded.phases["denoise"] == default.phases["denoise"] - sum(
        default.weights[p] for p in ("encode", "decode")
    )
    control = estimate_job(models, controlnets=1)  # video to video with one full-size SDXL ControlNet
    assert 2 * GiB < control.weights["denoise"] - default.weights["denoise"] < 2.5 * GiB
    assert default.peak < control.peak < 18 * GiB
    models.unet.ff_budget.bytes = None
    one_piece = estimate_job(models)
    assert 14 * GiB < one_piece.peak < 16 * GiB
    assert one_piece.phases["denoise"] - default.phases["denoise"] > 3 * GiB


@pytest.mark.parametrize(
    ("family", "side", "frames"), [("sd15", 512, 16), ("sdxl", 512, 16)], ids=["sd15-512", "sdxl-512"]
)
def test_the_decode_is_not_the_peak_at_the_default_chunk(family: str, side: int, frames: int) -> None:
    """At 512x512 the float32 VAE decodes 1 frame a call and the denoise stays the job's peak;
    8 frames a call would make the decode the peak."""
    models = sd15_models_on_meta() if family == "sd15" else sdxl_models_on_meta()
    default = estimate_job(models, width=side, height=side, context=frames)
    assert default.peak_phase == "denoise"
    eight = estimate_job(models, width=side, height=side, context=frames, vae_chunk=8)
    assert eight.peak_phase == "decode" and eight.peak > default.peak
