"""Our offline CLIP tokenizer against CLIP's reference tokenizer (open_clip's, loaded standalone)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from animdiff.models.tokenizer import BPE_FILE, PromptTokenizer, clip_tokenizer, find_bpe_file

PROMPTS = [
    "a photo of a cat",
    "masterpiece, best quality, 1girl, (smiling:1.2), [blurry], ((detailed face)), <lora:add_detail:0.8>",
    "A1111 (word:1.2) (another word:0.9) [[low]] \\(escaped parens\\) BREAK second chunk",
    "Café déjà vu — naïve façade; über-cool! 3.14159 x 42%",
    "  multiple   spaces\tand\nnewlines  ",
    "emoji 🐱🚀 test, 日本語のテキスト, 中文",
    "don't you're we've I'm they'll she'd it's",
    "embedding:EasyNegative, (worst quality, low quality:1.4), nsfw",
    "&amp; html &lt;entities&gt; &quot;quoted&quot;",
    "Ã©cole (mojibake)",
    "a " * 100,
    "",
]


@pytest.fixture(scope="module")
def reference():
    """open_clip's SimpleTokenizer without importing open_clip (which needs torchvision)."""
    pytest.importorskip("ftfy")
    pytest.importorskip("regex")
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        pytest.skip("open-clip-torch is not installed")
    source = Path(spec.submodule_search_locations[0]) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("reference_clip_tokenizer", source)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SimpleTokenizer(bpe_path=str(find_bpe_file()))


@pytest.mark.parametrize("prompt", PROMPTS)
def test_same_tokens_as_clip_reference(reference, prompt: str) -> None:
    ours = PromptTokenizer()
    assert ours([prompt])[0] == reference.encode(prompt)


def test_special_ids_and_vocabulary() -> None:
    tok = PromptTokenizer()
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (49406, 49407, 49407)
    assert tok.comma_id == 267
    assert len(clip_tokenizer()) == 49408


def test_missing_vocabulary_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from animdiff.errors import ModelFileError
    from animdiff.models import tokenizer

    monkeypatch.setenv("ANIMDIFF_CLIP_BPE", str(tmp_path / BPE_FILE))
    with pytest.raises(ModelFileError, match="pip install --no-deps open-clip-torch"):
        tokenizer.find_bpe_file()
