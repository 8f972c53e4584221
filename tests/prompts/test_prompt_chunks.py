"""A1111's 75-token chunking, with a fake tokenizer (word `wN` -> id 1000 + N, `,` -> 267)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from animdiff.prompts.chunks import Chunk, build_chunks, empty_chunk, pad_chunk_count, token_count
from animdiff.prompts.syntax import parse_attention

BOS, EOS, COMMA, OTHER = 49406, 49407, 267, 500
IDS = {"bos_id": BOS, "eos_id": EOS, "pad_id": EOS}


def tokenize(texts: list[str]) -> list[list[int]]:
    out = []
    for text in texts:
        ids = []
        for word in re.findall(r",|[^\s,]+", text):
            if word == ",":
                ids.append(COMMA)
            elif re.fullmatch(r"w\d+", word):
                ids.append(1000 + int(word[1:]))
            else:
                ids.append(OTHER)
        out.append(ids)
    return out


def words(start: int, count: int) -> str:
    return " ".join(f"w{i}" for i in range(start, start + count))


def ids(start: int, count: int) -> list[int]:
    return [1000 + i for i in range(start, start + count)]


def chunks_of(prompt: str, **kwargs) -> list[Chunk]:
    return build_chunks(parse_attention(prompt), tokenize, comma_id=COMMA, **IDS, **kwargs)


def count_of(prompt: str, **kwargs) -> int:
    return token_count(parse_attention(prompt), tokenize, comma_id=COMMA, **kwargs)


def content(chunk: Chunk) -> list[int]:
    """The chunk's tokens without start, end and padding (no test token equals EOS)."""
    assert chunk.tokens[0] == BOS
    assert chunk.tokens[-1] == EOS
    return [t for t in chunk.tokens[1:-1] if t != EOS]


def test_empty_prompt_gives_one_padding_chunk() -> None:
    (chunk,) = chunks_of("")
    assert chunk.tokens == [BOS] + [EOS] * 76
    assert chunk.weights == [1.0] * 77
    assert chunk == empty_chunk(BOS, EOS, EOS)
    assert count_of("") == 0


def test_short_prompt_is_padded_with_end_tokens() -> None:
    (chunk,) = chunks_of(words(0, 3))
    assert chunk.tokens == [BOS, *ids(0, 3), *[EOS] * 72, EOS]
    assert len(chunk.weights) == 77
    assert count_of(words(0, 3)) == 3


def test_exactly_75_tokens_fit_one_chunk() -> None:
    (chunk,) = chunks_of(words(0, 75))
    assert chunk.tokens == [BOS, *ids(0, 75), EOS]
    assert count_of(words(0, 75)) == 75


def test_76th_token_opens_a_second_chunk() -> None:
    first, second = chunks_of(words(0, 76))
    assert content(first) == ids(0, 75)
    assert content(second) == ids(75, 1)
    assert count_of(words(0, 76)) == 76


def test_weights_follow_their_tokens() -> None:
    (chunk,) = chunks_of("w0 (w1 w2) [w3] (w4:1.5)")
    assert chunk.tokens[1:6] == ids(0, 5)
    assert chunk.weights[:6] == [1.0, 1.0, 1.1, 1.1, 1 / 1.1, 1.5]
    assert chunk.weights[6:] == [1.0] * 71


def test_weights_carried_across_a_chunk_boundary() -> None:
    first, second = chunks_of(f"{words(0, 74)} (w74 w75:1.3)")
    assert first.weights[75] == 1.3
    assert second.weights[:3] == [1.0, 1.3, 1.0]


def test_comma_backtrack_within_20_moves_the_phrase() -> None:
    # comma at position 70; the phrase after it would be split, so it moves to the next chunk
    first, second = chunks_of(f"{words(0, 70)} , {words(70, 10)}")
    assert content(first) == [*ids(0, 70), COMMA]
    assert first.tokens[72:] == [EOS] * 5
    assert content(second) == ids(70, 10)
    assert count_of(f"{words(0, 70)} , {words(70, 10)}") == 75 + 10


def test_comma_backtrack_keeps_weights_of_moved_tokens() -> None:
    _, second = chunks_of(f"{words(0, 70)} , (w70 w71 w72 w73 w74 w75)")
    assert second.weights[1:7] == [1.1] * 6


@pytest.mark.parametrize(("comma_at", "moved"), [(55, True), (54, False), (74, True)])
def test_comma_backtrack_limit_is_20(comma_at: int, moved: bool) -> None:
    prompt = f"{words(0, comma_at)} , {words(comma_at, 80 - comma_at)}"
    first, second = chunks_of(prompt)
    if moved:
        assert content(first) == [*ids(0, comma_at), COMMA]
        assert content(second) == ids(comma_at, 80 - comma_at)
    else:
        assert content(first) == [*ids(0, comma_at), COMMA, *ids(comma_at, 74 - comma_at)]
        assert content(second) == ids(74, 6)


def test_comma_backtrack_beyond_20_cuts_at_75() -> None:
    first, second = chunks_of(f"{words(0, 50)} , {words(50, 30)}")
    assert content(first) == [*ids(0, 50), COMMA, *ids(50, 24)]
    assert content(second) == ids(74, 6)


def test_comma_backtrack_zero_disables_it() -> None:
    first, second = chunks_of(f"{words(0, 70)} , {words(70, 10)}", comma_backtrack=0)
    assert content(first) == [*ids(0, 70), COMMA, *ids(70, 4)]
    assert content(second) == ids(74, 6)


def test_only_the_last_comma_counts() -> None:
    first, _ = chunks_of(f"{words(0, 60)} , {words(60, 5)} , {words(65, 20)}")
    assert content(first) == [*ids(0, 60), COMMA, *ids(60, 5), COMMA]


def test_comma_arriving_at_a_full_chunk_is_not_remembered() -> None:
    # the comma starts chunk 2 at position 0 but the web UI forgets it when chunk 1 closes,
    # so even a huge backtrack window does not cut chunk 2 after it
    prompt = f"{words(0, 75)} , {words(75, 80)}"
    chunks = chunks_of(prompt, comma_backtrack=75)
    assert content(chunks[1]) == [COMMA, *ids(75, 74)]
    assert content(chunks[2]) == ids(149, 6)


def test_comma_in_the_next_chunk_is_used_after_a_close() -> None:
    prompt = f"{words(0, 75)} w75 , {words(76, 80)}"
    chunks = chunks_of(prompt, comma_backtrack=75)
    assert content(chunks[1]) == [*ids(75, 1), COMMA]


def test_break_starts_a_new_chunk() -> None:
    first, second = chunks_of("w0 w1 BREAK w2")
    assert content(first) == ids(0, 2)
    assert content(second) == ids(2, 1)
    assert count_of("w0 w1 BREAK w2") == 75 + 1


def test_break_alone_gives_one_empty_chunk() -> None:
    assert chunks_of("BREAK") == [empty_chunk(BOS, EOS, EOS)]
    assert count_of("BREAK") == 75


def test_double_break_gives_an_empty_chunk_between() -> None:
    chunks = chunks_of("w0 BREAK BREAK w1")
    assert [content(c) for c in chunks] == [ids(0, 1), [], ids(1, 1)]


def test_trailing_break_leaves_no_extra_chunk() -> None:
    assert [content(c) for c in chunks_of("w0 BREAK")] == [ids(0, 1)]


def test_break_resets_the_comma() -> None:
    prompt = f"w0 , BREAK {words(1, 80)}"
    chunks = chunks_of(prompt)
    assert content(chunks[1]) == ids(1, 75)


def test_scaled_break_is_just_a_word() -> None:
    (chunk,) = chunks_of("(w0 BREAK w1)")
    assert content(chunk) == [1000, OTHER, 1001]
    assert chunk.weights[1:4] == [1.1, -1.1, 1.1]


def test_distinct_pad_token_follows_the_first_end_token() -> None:
    (chunk,) = build_chunks(
        parse_attention("w0 w1"), tokenize, comma_id=COMMA, bos_id=BOS, eos_id=EOS, pad_id=0
    )
    assert chunk.tokens == [BOS, *ids(0, 2), EOS, *[0] * 73]
    (full,) = build_chunks(
        parse_attention(words(0, 75)), tokenize, comma_id=COMMA, bos_id=BOS, eos_id=EOS, pad_id=0
    )
    assert full.tokens == [BOS, *ids(0, 75), EOS]
    assert empty_chunk(BOS, EOS, 0).tokens == [BOS, EOS, *[0] * 75]


def test_custom_chunk_length() -> None:
    chunks = chunks_of(words(0, 5), chunk_length=3)
    assert [len(c.tokens) for c in chunks] == [5, 5]
    assert [content(c) for c in chunks] == [ids(0, 3), ids(3, 2)]


def test_tokenize_must_answer_every_text() -> None:
    with pytest.raises(ValueError, match="token lists"):
        build_chunks([("a", 1.0)], lambda texts: [], comma_id=COMMA, **IDS)


def test_pad_chunk_count() -> None:
    empty = empty_chunk(BOS, EOS, EOS)
    short = chunks_of("w0")
    long = chunks_of("w0 BREAK w1 BREAK w2")
    padded = pad_chunk_count([short, long], empty)
    assert [len(p) for p in padded] == [3, 3]
    assert padded[0][0] == short[0]
    assert padded[0][1] == empty
    assert padded[0][1] is not padded[0][2]
    assert padded[1] == long
    assert pad_chunk_count([], empty) == []


_PIECE = st.one_of(
    st.integers(min_value=0, max_value=200).map(lambda i: f"w{i}"),
    st.just(","),
    st.just("BREAK"),
    st.just("(w7 w8)"),
)


@settings(deadline=None)
@given(st.lists(_PIECE, max_size=260), st.integers(min_value=0, max_value=30))
def test_chunking_keeps_every_token_in_order(pieces: list[str], backtrack: int) -> None:
    prompt = " ".join(pieces)
    parsed = parse_attention(prompt)
    chunks = build_chunks(parsed, tokenize, comma_id=COMMA, **IDS, comma_backtrack=backtrack)
    expected = [
        (token, weight)
        for (text, weight), tokens in zip(parsed, tokenize([t for t, _ in parsed]), strict=True)
        if not (text == "BREAK" and weight == -1.0)
        for token in tokens
    ]
    got = []
    for chunk in chunks:
        assert len(chunk.tokens) == len(chunk.weights) == 77
        body = content(chunk)
        assert len(body) <= 75
        got.extend(zip(body, chunk.weights[1 : 1 + len(body)], strict=True))
        assert chunk.weights[1 + len(body) :] == [1.0] * (76 - len(body))
    assert got == expected
    total = count_of(prompt, comma_backtrack=backtrack)
    if pieces and pieces[-1] == "BREAK":  # the last chunk was closed by BREAK: counted whole
        assert total == 75 * len(chunks)
    else:
        assert total == 75 * (len(chunks) - 1) + len(content(chunks[-1]))
