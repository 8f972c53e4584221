"""A1111's 75-token chunking of a weighted prompt, on token ids.

CLIP reads at most 77 tokens (start, 75 tokens, end). The web UI lifts that limit by cutting a
prompt into chunks of 75 tokens, encoding each chunk on its own and concatenating the results.
Where the cuts fall changes the embedding, so animdiff cuts exactly where the web UI does:

  * The pieces of `parse_attention` are tokenized without start/end tokens, and each token is
    appended to the current chunk with its piece's weight.
  * The marker `("BREAK", -1.0)` closes the current chunk (even an empty one) and starts a new
    one. Only the exact weight -1.0 counts as the marker (see `animdiff.prompts.syntax`).
  * When the current chunk already holds 75 tokens it is closed before the next token goes in.
    Comma backtracking: if that next token is not a comma, the chunk holds a comma, and the
    last comma sits at most `comma_backtrack` (20) positions before the end of the chunk, the
    chunk is cut right after that comma and the tokens after it move to the new chunk, so a
    short phrase is not split between two chunks. A comma arriving at a full chunk opens the
    next chunk but is not remembered as that chunk's last comma (each chunk forgets its
    comma when it closes, and the comma is noted before the chunk closes): a web UI quirk,
    reproduced.
  * Closing a chunk pads it to 75 with the end token (weight 1.0) and wraps it in start and end
    tokens (weight 1.0), 77 in all. At the end of the prompt the current chunk is closed if it
    holds tokens or if there is no chunk yet, so an empty prompt still gives one chunk.
  * Tokenizers whose padding token is not the end token (OpenCLIP's) get every position after
    the first end token replaced by the padding token, which is how the web UI prepares them
    for the encoder. For SD1.5's CLIP the two are the same and nothing changes.

Textual-inversion embeddings, which the web UI keeps whole inside one chunk, are not handled
here: animdiff does not load them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from animdiff.prompts.syntax import BREAK, BREAK_WEIGHT

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20

Tokenize = Callable[[list[str]], list[list[int]]]


@dataclass
class Chunk:
    """One encoder input: `chunk_length + 2` token ids and the weight of each position."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


@dataclass
class _Chunker:
    """The running state of A1111's chunking loop: the open chunk and the closed ones."""

    comma_id: int
    chunk_length: int
    comma_backtrack: int
    closed: list[Chunk] = field(default_factory=list)
    current: Chunk = field(default_factory=Chunk)
    last_comma: int = -1
    count: int = 0

    def close(self, *, is_last: bool = False) -> None:
        """Close the open chunk (unpadded here) and count its tokens as the web UI does."""
        self.count += len(self.current.tokens) if is_last else self.chunk_length
        self.closed.append(self.current)
        self.current = Chunk()
        self.last_comma = -1

    def add(self, token: int, weight: float) -> None:
        chunk = self.current
        if token == self.comma_id:
            self.last_comma = len(chunk.tokens)
        elif self._should_backtrack():
            cut = self.last_comma + 1
            moved = Chunk(chunk.tokens[cut:], chunk.weights[cut:])
            del chunk.tokens[cut:], chunk.weights[cut:]
            self.close()
            self.current = moved
        if len(self.current.tokens) == self.chunk_length:
            self.close()
        self.current.tokens.append(token)
        self.current.weights.append(weight)

    def _should_backtrack(self) -> bool:
        return (
            self.comma_backtrack != 0
            and len(self.current.tokens) == self.chunk_length
            and self.last_comma != -1
            and self.chunk_length - self.last_comma <= self.comma_backtrack
        )

    def finish(self) -> list[Chunk]:
        if self.current.tokens or not self.closed:
            self.close(is_last=True)
        return self.closed


def _run_chunker(
    parsed: Sequence[tuple[str, float]],
    tokenize: Tokenize,
    comma_id: int,
    chunk_length: int,
    comma_backtrack: int,
) -> _Chunker:
    texts = [text for text, _ in parsed]
    token_lists = tokenize(texts)
    if len(token_lists) != len(texts):
        raise ValueError(f"tokenize returned {len(token_lists)} token lists for {len(texts)} texts")
    chunker = _Chunker(comma_id, chunk_length, comma_backtrack)
    for tokens, (text, weight) in zip(token_lists, parsed, strict=True):
        if text == BREAK and weight == BREAK_WEIGHT:
            chunker.close()
            continue
        for token in tokens:
            chunker.add(token, weight)
    chunker.finish()
    return chunker


def build_chunks(
    parsed: Sequence[tuple[str, float]],
    tokenize: Tokenize,
    *,
    comma_id: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    chunk_length: int = CHUNK_LENGTH,
    comma_backtrack: int = COMMA_BACKTRACK,
) -> list[Chunk]:
    """Cut a parsed prompt into encoder-ready chunks of `chunk_length + 2` tokens and weights.

    `tokenize` turns a list of texts into their token ids, without start/end tokens (the
    tokenizer's batch call with special tokens off). `comma_backtrack` 0 turns backtracking off.
    """
    chunker = _run_chunker(parsed, tokenize, comma_id, chunk_length, comma_backtrack)
    return [_wrap(chunk, bos_id, eos_id, pad_id, chunk_length) for chunk in chunker.closed]


def token_count(
    parsed: Sequence[tuple[str, float]],
    tokenize: Tokenize,
    *,
    comma_id: int,
    chunk_length: int = CHUNK_LENGTH,
    comma_backtrack: int = COMMA_BACKTRACK,
) -> int:
    """The web UI's token counter: 75 for every chunk but the last, plus the last chunk's tokens.

    This is the number the web UI shows beside the prompt box (a BREAK or a backtracked cut
    counts the whole chunk, padding included).
    """
    return _run_chunker(parsed, tokenize, comma_id, chunk_length, comma_backtrack).count


def _wrap(chunk: Chunk, bos_id: int, eos_id: int, pad_id: int, chunk_length: int) -> Chunk:
    """Pad with the end token, add start and end tokens, then apply a distinct padding token."""
    fill = chunk_length - len(chunk.tokens)
    tokens = [bos_id, *chunk.tokens, *([eos_id] * fill), eos_id]
    weights = [1.0, *chunk.weights, *([1.0] * fill), 1.0]
    return Chunk(_repad(tokens, eos_id, pad_id), weights)


def _repad(tokens: list[int], eos_id: int, pad_id: int) -> list[int]:
    if pad_id == eos_id:
        return tokens
    first_end = tokens.index(eos_id)
    return tokens[: first_end + 1] + [pad_id] * (len(tokens) - first_end - 1)


def empty_chunk(bos_id: int, eos_id: int, pad_id: int, chunk_length: int = CHUNK_LENGTH) -> Chunk:
    """The chunk of an empty prompt: what shorter prompts are padded with (all weights 1.0)."""
    tokens = [bos_id, *([eos_id] * (chunk_length + 1))]
    return Chunk(_repad(tokens, eos_id, pad_id), [1.0] * (chunk_length + 2))


def pad_chunk_count(chunk_lists: Sequence[Sequence[Chunk]], empty: Chunk) -> list[list[Chunk]]:
    """Give every prompt as many chunks as the longest, appending copies of `empty`.

    Prompts encoded in one batch (the per-frame prompts of a prompt travel, or a prompt and its
    negative prompt) must have the same number of chunks to be stacked; the web UI fills the
    gap with empty-prompt chunks, which is what this does.
    """
    longest = max((len(chunks) for chunks in chunk_lists), default=0)
    return [
        [*chunks, *(Chunk(list(empty.tokens), list(empty.weights)) for _ in range(longest - len(chunks)))]
        for chunks in chunk_lists
    ]
