"""Every name `animdiff models` prints, and the forms A1111 users type, find the same file."""

from __future__ import annotations

from pathlib import Path

import pytest

from animdiff.errors import ModelNotFoundError
from animdiff.models.detect import CHECKPOINT_KINDS, MOTION_KINDS, Kind
from animdiff.models.store import LISTED, ModelStore, looks_like_hub_id

CATEGORY_OF_KIND = {
    **{kind: "checkpoint" for kind in CHECKPOINT_KINDS},
    **{kind: "motion_module" for kind in MOTION_KINDS},
    Kind.LORA_SD15: "lora",
    Kind.LORA_SDXL: "lora",
    Kind.MOTION_LORA: "motion_lora",
}


def test_every_listed_name_resolves_to_its_file(models_dir: Path) -> None:
    store = ModelStore(models_dir)
    checked = 0
    for entry in store.inventory():
        category = CATEGORY_OF_KIND.get(entry.detected.kind) if entry.detected else None
        if category is None:
            continue
        for name in (entry.relative, entry.relative.upper(), entry.path.name, entry.path.stem.upper()):
            assert store.find(name, category) == entry.path.resolve(), (name, category)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    ("name", "category", "expected"),
    [
        ("TINY-SD15", "checkpoint", "Stable-diffusion/tiny-sd15.safetensors"),
        ("tiny-sd15.safetensors [0123456789]", "checkpoint", "Stable-diffusion/tiny-sd15.safetensors"),
        ("Stable-diffusion/tiny-sd15", "checkpoint", "Stable-diffusion/tiny-sd15.safetensors"),
        ("AnimateDiff/tiny-mm-v2.ckpt", "motion_module", "AnimateDiff/tiny-mm-v2.ckpt"),
        ("Tiny-MM-V3", "motion_module", "AnimateDiff/tiny-mm-v3.safetensors"),
        ("Lora/tiny-style.safetensors", "lora", "Lora/tiny-style.safetensors"),
        ("v2_lora_tinyzoomin", "motion_lora", "AnimateDiff/v2_lora_TinyZoomIn.ckpt"),
    ],
)
def test_forms_users_type(models_dir: Path, name: str, category: str, expected: str) -> None:
    assert ModelStore(models_dir).find(name, category) == (models_dir / expected).resolve()


def test_hub_ids_only_without_a_weight_extension() -> None:
    assert looks_like_hub_id("runwayml/stable-diffusion-v1-5")
    assert looks_like_hub_id("SG161222/Realistic_Vision_V5.1_noVAE")
    assert not looks_like_hub_id("Stable-diffusion/tiny-sd15.safetensors")
    assert not looks_like_hub_id("AnimateDiff/mm_sd_v15_v2.ckpt")
    assert not looks_like_hub_id("just-a-name")


def test_missing_name_lists_the_asked_kind_first_and_says_when_cut(tmp_path: Path) -> None:
    for i in range(LISTED + 3):
        path = tmp_path / "Lora" / f"style-{i:02d}.safetensors"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x")
    (tmp_path / "AnimateDiff").mkdir()
    (tmp_path / "AnimateDiff" / "mm_sd_v15_v2.ckpt").write_bytes(b"x")
    (tmp_path / "AnimateDiff" / "v2_lora_PanLeft.ckpt").write_bytes(b"x")
    store = ModelStore(tmp_path)
    with pytest.raises(ModelNotFoundError) as caught:
        store.resolve_first("nope", ("lora", "motion_lora"), asked_as="<lora:nope>")
    message = str(caught.value)
    assert message.startswith("<lora:nope>: LoRA 'nope' not found")
    assert message.index("LoRAs available") < message.index("motion LoRAs available")
    assert "and 3 more" in message
    assert "v2_lora_PanLeft.ckpt" in message and "mm_sd_v15_v2.ckpt" not in message
