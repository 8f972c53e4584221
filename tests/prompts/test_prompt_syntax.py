"""A1111 attention syntax, BREAK and extra-network tags."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from animdiff.errors import PromptError
from animdiff.prompts.syntax import (
    ExtraNetwork,
    extract_extra_networks,
    merge_networks,
    parse_attention,
)

R = 1.1
S = 1 / 1.1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # the web UI's own documented examples
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.5730000000000004),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.4641000000000006),
                (".", 1.1),
            ],
        ),
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        # empty and bracket-only prompts
        ("", [("", 1.0)]),
        ("()", [("", 1.0)]),
        ("([])", [("", 1.0)]),
        # square brackets multiply by the rounded reciprocal
        ("[x]", [("x", S)]),
        ("[[x]]", [("x", 1.0 * S * S)]),
        ("((x))", [("x", 1.0 * R * R)]),
        ("([x])", [("x", 1.0 * S * R)]),
        # explicit weights, with spaces and signs
        ("(x:1.5)", [("x", 1.5)]),
        ("(x: 1.5 )", [("x", 1.5)]),
        ("(x:-1)", [("x", -1.0)]),
        ("(x:+2)", [("x", 2.0)]),
        ("(x:.5)", [("x", 0.5)]),
        ("(x:0)", [("x", 0.0)]),
        ("((x:2))", [("x", 2.0 * R)]),
        ("(a (b:2) c)", [("a ", R), ("b", 2.0 * R), (" c", R)]),
        # what looks like a weight but is not one stays text
        ("(x:1e3)", [("x:1e3", R)]),
        ("(x:high)", [("x:high", R)]),
        ("[x:1.5]", [("x:1.5", S)]),
        ("x:1.5) y", [("x:1.5) y", 1.0)]),
        ("a: b", [("a: b", 1.0)]),
        ("(x:1.5", [("x:1.5", R)]),
        # unmatched closers are text; unclosed openers run to the end
        ("a) b", [("a) b", 1.0)]),
        ("a] b", [("a] b", 1.0)]),
        ("(a] b)", [("a] b", R)]),
        ("[a) b]", [("a) b", S)]),
        ("a (b [c", [("a ", 1.0), ("b ", R), ("c", 1.0 * R * S)]),
        ("((a", [("a", 1.0 * R * R)]),
        # escapes
        ("\\\\", [("\\", 1.0)]),
        ("\\[x\\)", [("[x)", 1.0)]),
        ("(\\(x\\))", [("(x)", R)]),
        ("a\\b", [("ab", 1.0)]),
        ("(\\", [("", R)]),
        # BREAK
        ("BREAK", [("", 1.0), ("BREAK", -1.0), ("", 1.0)]),
        ("a\n BREAK \tb", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("a BREAK BREAK b", [("a", 1.0), ("BREAK", -1.0), ("", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
        ("aBREAK b", [("aBREAK b", 1.0)]),
        ("a break b", [("a break b", 1.0)]),
        ("a BREAKS b", [("a BREAKS b", 1.0)]),
        ("(a) BREAK (b)", [("a", R), ("", 1.0), ("BREAK", -1.0), ("", 1.0), ("b", R)]),
        # a BREAK inside brackets is scaled like everything else, and stops being a marker
        ("(a BREAK b)", [("a", R), ("BREAK", -1.0 * R), ("b", R)]),
    ],
)
def test_parse_attention(text: str, expected: list[tuple[str, float]]) -> None:
    assert parse_attention(text) == expected


def test_weights_are_exact_python_products() -> None:
    # the closing order decides the product order: inner bracket first, open ones at the end
    assert parse_attention("(((house:1.3))")[0][1] == ((1.0 * 1.3) * 1.1) * 1.1
    assert parse_attention("([x]")[0][1] == (1.0 * S) * R
    assert parse_attention("[(x)")[0][1] == (1.0 * R) * S
    assert parse_attention("[(x")[0][1] == (1.0 * R) * S  # unclosed: round ones before square ones


@pytest.mark.parametrize("text", ["(x:1.2.3)", "(x:.)", "(x:-.)", "(x:..5)"])
def test_malformed_number_in_weight_position_is_an_error(text: str) -> None:
    with pytest.raises(PromptError, match="not a number"):
        parse_attention(text)


def test_malformed_number_without_open_bracket_is_text() -> None:
    assert parse_attention("x:1.2.3)") == [("x:1.2.3)", 1.0)]


def test_returns_tuples_of_str_and_float() -> None:
    for text, weight in parse_attention("a (b) BREAK [c:2]"):
        assert isinstance(text, str)
        assert type(weight) is float


_ALPHABET = st.sampled_from([*"ab ,.:()[]\\1-+", "BREAK", " BREAK ", "\n"])


@settings(deadline=None)
@given(st.lists(_ALPHABET, max_size=40).map("".join))
def test_parse_attention_never_crashes_and_merges(text: str) -> None:
    try:
        result = parse_attention(text)
    except PromptError:
        return
    assert result
    for (_, left), (_, right) in itertools.pairwise(result):
        assert left != right


@settings(deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\\()[]:"), max_size=50))
def test_plain_text_has_weight_one(text: str) -> None:
    pieces = parse_attention(text)
    if "BREAK" in text:
        return
    assert pieces == [(text, 1.0)]


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=8), st.text(alphabet="abc ,", min_size=1, max_size=10))
def test_nested_round_brackets_multiply(depth: int, word: str) -> None:
    expected = 1.0
    for _ in range(depth):
        expected *= R
    assert parse_attention("(" * depth + word + ")" * depth) == [(word, expected)]


# --- extra networks ------------------------------------------------------------------------------


def lora(name: str, te: float = 1.0, unet: float | None = None) -> ExtraNetwork:
    return ExtraNetwork("lora", name, te, te if unet is None else unet)


@pytest.mark.parametrize(
    ("text", "rest", "networks"),
    [
        ("a <lora:add_detail:0.8>, b", "a , b", [lora("add_detail", 0.8)]),
        ("<lora:x>", "", [lora("x")]),
        ("<lora:style:1:0.5>", "", [lora("style", 1.0, 0.5)]),
        ("<lora:x:unet=0.5:te=0.2>", "", [lora("x", 0.2, 0.5)]),
        ("<lora:x:te=0.2>", "", [lora("x", 0.2, 0.2)]),
        ("<lora:x:0.7:unet=0.1>", "", [lora("x", 0.7, 0.1)]),
        ("<lora:x:0.7:0.3:te=0.1>", "", [lora("x", 0.1, 0.3)]),
        ("<lora:x:-1>", "", [lora("x", -1.0)]),
        ("<lora:x:1e-1>", "", [lora("x", 0.1)]),
        ("<lyco:old:0.5>", "", [lora("old", 0.5)]),
        ("<lora: spaced :0.5>", "", [lora("spaced", 0.5)]),
        ("<lora:a> and <lora:b:2>", " and ", [lora("a"), lora("b", 2.0)]),
        ("(<lora:a:0.5>:1.2) x", "(:1.2) x", [lora("a", 0.5)]),
        # not tags: left as text
        ("a <b> c", "a <b> c", []),
        ("a <:x> c", "a <:x> c", []),
        ("a <lora x> c", "a <lora x> c", []),
        ("a <lora:> c", "a <lora:> c", []),
        ("a <lora-x:y> c", "a <lora-x:y> c", []),
        ("no tags", "no tags", []),
    ],
)
def test_extract_extra_networks(text: str, rest: str, networks: list[ExtraNetwork]) -> None:
    assert extract_extra_networks(text) == (rest, networks)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("<hypernet:x:1>", "hypernetworks are not supported"),
        ("<embedding:x>", "'embedding' are not supported"),
        ("<LORA:x>", "'LORA' are not supported"),
        ("<lora:x:abc>", r"<lora:x:abc>: weight 'abc' is not a number"),
        ("<lora:x::0.5>", "weight '' is not a number"),
        ("<lora:x:1:nan>", "not a number"),
        ("<lora:x:inf>", "not a number"),
        ("<lora:x:te=abc>", "weight 'abc'"),
        ("<lora:x:1:1:8>", "dyn"),
        ("<lora:x:dyn=8>", "dyn"),
        ("<lora:x:foo=1>", "unknown argument 'foo'"),
        ("<lora::0.5>", "name is missing"),
        ("<lora:te=1>", "name is missing"),
    ],
)
def test_extract_extra_networks_errors(text: str, match: str) -> None:
    with pytest.raises(PromptError, match=match):
        extract_extra_networks(text)


def test_merge_networks_collapses_identical_repeats() -> None:
    items = [lora("a", 0.5), lora("b"), lora("a", 0.5)]
    assert merge_networks(items) == [lora("a", 0.5), lora("b")]


def test_merge_networks_lyco_alias_is_the_same_lora() -> None:
    _, first = extract_extra_networks("<lora:a:0.5>")
    _, second = extract_extra_networks("<lyco:a:0.5>")
    assert merge_networks(first + second) == [lora("a", 0.5)]


def test_merge_networks_rejects_different_weights() -> None:
    with pytest.raises(PromptError, match="LoRA 'a' appears twice with different weights"):
        merge_networks([lora("a", 0.5), lora("a", 0.5, 0.4)])


def test_merge_networks_empty() -> None:
    assert merge_networks([]) == []
