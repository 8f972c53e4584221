"""The CLIP tokenizer, built offline.

Single-file checkpoints carry the text encoder's weights but not its tokenizer, and the usual way
to get one (`openai/clip-vit-large-patch14` from the Hugging Face hub) needs the network. The
tokenizer is fully described by CLIP's BPE merge list, which open-clip-torch (and clip-anytorch)
ship as `bpe_simple_vocab_16e6.txt.gz`; from it we derive the vocabulary the same way CLIP does
(byte symbols, byte symbols with an end-of-word marker, one entry per merge, then the two
special tokens) and build a `transformers.CLIPTokenizer` in memory.

We locate the file without importing those packages: importing open_clip pulls torchvision,
which we do not install (it drags a CUDA build of torch onto CPU machines).
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import os
import re
from functools import lru_cache
from pathlib import Path

import ftfy
from transformers import CLIPTokenizer

from animdiff.errors import ModelFileError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
MERGE_COUNT = VOCAB_SIZE - 2 * 256 - 2  # byte symbols twice, plus the two special tokens
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MAX_LENGTH = 77


def _packages_with_bpe() -> list[Path]:
    places = []
    for package in ("open_clip", "clip"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            places.extend(Path(p) / BPE_FILE for p in spec.submodule_search_locations)
    return places


def find_bpe_file() -> Path:
    """Where CLIP's merge list is: $ANIMDIFF_CLIP_BPE, else inside open-clip-torch or clip-anytorch."""
    explicit = os.environ.get("ANIMDIFF_CLIP_BPE")
    candidates = [Path(explicit)] if explicit else _packages_with_bpe()
    for path in candidates:
        if path.is_file():
            return path
    raise ModelFileError(
        f"CLIP's tokenizer vocabulary ({BPE_FILE}) was not found. Install it with "
        "`pip install --no-deps open-clip-torch` (its data file is all animdiff uses), "
        "or point ANIMDIFF_CLIP_BPE at a copy of the file."
    )


def _byte_symbols() -> list[str]:
    """CLIP's reversible byte-to-character table, in CLIP's order.

    Printable Latin-1 bytes stand for themselves; the remaining bytes are mapped, in byte order,
    onto code points from 256 upwards so that no symbol is whitespace or a control character.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + extra)
            extra += 1
    ordered = [symbols[b] for b in printable] + [symbols[b] for b in range(256) if b not in printable]
    return ordered


def vocabulary_from_bpe(path: Path) -> tuple[dict[str, int], list[tuple[str, ...]]]:
    """The token -> id table and the merge list, exactly as CLIP builds them from the BPE file."""
    try:
        lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: cannot read CLIP's BPE vocabulary ({exc})") from None
    merges = [tuple(line.split()) for line in lines[1 : 1 + MERGE_COUNT]]
    if len(merges) != MERGE_COUNT:
        raise ModelFileError(f"{path}: expected {MERGE_COUNT} BPE merges, found {len(merges)}")
    base = _byte_symbols()
    tokens = base + [s + "</w>" for s in base] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    return {token: i for i, token in enumerate(tokens)}, merges


@lru_cache(maxsize=1)
def clip_tokenizer() -> CLIPTokenizer:
    """SD1.5's tokenizer (CLIP ViT-L/14): 49408 tokens, 77 positions, padded with the end token."""
    vocab, merges = vocabulary_from_bpe(find_bpe_file())
    return CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=MAX_LENGTH,
    )


def clean_text(text: str) -> str:
    """CLIP's own text clean-up, which the BPE alone does not do.

    CLIP's reference tokenizer (and A1111, through transformers with ftfy installed) repairs
    mojibake, unescapes HTML entities twice and collapses whitespace before tokenizing, so
    `&amp;` in a prompt is the token for `&`.
    """
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return re.sub(r"\s+", " ", text).strip()


class PromptTokenizer:
    """Token ids for prompt fragments, without the start and end tokens (the chunker adds them)."""

    def __init__(self, tokenizer: CLIPTokenizer | None = None) -> None:
        self.tokenizer = tokenizer or clip_tokenizer()
        self.bos_id = self.tokenizer.bos_token_id
        self.eos_id = self.tokenizer.eos_token_id
        self.pad_id = self.tokenizer.pad_token_id
        self.comma_id = self.tokenizer.convert_tokens_to_ids(",</w>")

    def __call__(self, texts: list[str]) -> list[list[int]]:
        cleaned = [clean_text(t) for t in texts]
        encoded = self.tokenizer(cleaned, add_special_tokens=False, truncation=False)["input_ids"]
        return [list(ids) for ids in encoded]
