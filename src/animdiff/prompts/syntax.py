"""A1111 prompt syntax: attention weights, BREAK and extra-network (LoRA) tags.

People paste prompts written for the AUTOMATIC1111 web UI, so a prompt must weigh the same here
as it does there, down to the last floating-point digit (the weights scale text embeddings, and a
different product order would already change the image). The rules, as the web UI applies them:

Attention (`parse_attention`)
  * `(text)` multiplies the weight of everything inside by 1.1; `[text]` multiplies it by
    1/1.1 (a multiplication by the rounded reciprocal, not a division, which matters for the
    last bit). `(text:1.5)` multiplies by 1.5 instead of 1.1. Brackets nest, and each closing
    bracket multiplies every piece written since its opening bracket, in the order the
    brackets close.
  * A weight is only recognised in the exact shape `:` + optional spaces + an optional sign and
    a run of digits and dots + optional spaces + `)`. Anything else after a colon (`:high)`,
    `:1e3)`, `:1.5]`) is plain text, and so is a weight with no open round bracket before it.
    A digit-and-dot run that is not a number (`(x:1.2.3)`) would crash the web UI; here it is
    a `PromptError`.
  * `\\(`, `\\)`, `\\[`, `\\]` and `\\\\` stand for the character after the backslash. A backslash
    before anything else vanishes (it becomes an empty piece of text).
  * A closing bracket with no matching opening bracket of the same kind is plain text.
    Brackets still open at the end of the prompt apply to everything after them: first the
    round ones (outermost first), then the square ones.
  * The word `BREAK` (upper case, a whole word) together with the whitespace around it becomes
    the marker `("BREAK", -1.0)`, which starts a new 75-token chunk. The marker sits in the same
    list as the text, so brackets around it scale it too; a scaled marker (say -1.1) is no
    longer a marker but the literal word BREAK with that weight. That is odd, but it is what the
    web UI does, so it is reproduced.
  * Neighbouring pieces with equal weights are joined into one; an empty prompt (or one that
    is only brackets) gives `[("", 1.0)]`.

Extra networks (`extract_extra_networks`)
  * A tag is `<kind:args>` where kind is a word and args runs to the next `>`. Every such tag
    is cut out of the prompt (nothing else is touched, so `a <lora:x>, b` becomes `a , b`).
  * args split on `:`; a piece with exactly one `=` is a named argument, the rest are
    positional: name, text-encoder weight (default 1.0), UNet weight (default: the text
    encoder weight). `te=` and `unet=` override the positional weights.
  * `lyco` is an old alias of `lora`. Other kinds (hypernetworks and anything unknown) are
    errors: the web UI skips unknown kinds with a console message, and a silently ignored tag
    is worse than a clear refusal. `dyn` (LyCORIS dynamic dim), a fourth positional value and
    unknown named arguments are errors for the same reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from animdiff.errors import PromptError

BREAK = "BREAK"
BREAK_WEIGHT = -1.0
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1

# One token of the attention syntax per match; the alternatives start with different characters
# except the escape (longest first, through the optional second character) and the colon (a full
# weight is tried before a lone colon).
_ATTENTION_TOKEN = re.compile(
    r"""
      (?P<escape>\\[()\[\]\\]?)
    | (?P<open>[(\[])
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+|:)
    """,
    re.VERBOSE,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*")


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) pieces exactly as the A1111 web UI weighs them."""
    pieces: list[list] = []  # [text, weight] pairs, weights updated in place as brackets close
    open_round: list[int] = []
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _ATTENTION_TOKEN.finditer(text):
        token = match.group(0)
        if match.group("escape") is not None:
            pieces.append([token[1:], 1.0])
        elif token == "(":
            open_round.append(len(pieces))
        elif token == "[":
            open_square.append(len(pieces))
        elif match.group("weight") is not None and open_round:
            scale_from(open_round.pop(), _attention_weight(match.group("weight"), token))
        elif token == ")" and open_round:
            scale_from(open_round.pop(), ROUND_MULTIPLIER)
        elif token == "]" and open_square:
            scale_from(open_square.pop(), SQUARE_MULTIPLIER)
        else:
            pieces.extend(_split_break(token))

    for start in open_round:
        scale_from(start, ROUND_MULTIPLIER)
    for start in open_square:
        scale_from(start, SQUARE_MULTIPLIER)
    return _merge_equal_weights(pieces) if pieces else [("", 1.0)]


def _attention_weight(number: str, token: str) -> float:
    """The digit-and-dot run of `(x:N)`; one that is not a number is the user's typo to fix."""
    try:
        return float(number)
    except ValueError:
        raise PromptError(f"attention weight {number!r} in {token!r} is not a number") from None


def _split_break(text: str) -> list[list]:
    """Plain text, with every BREAK word (and its surrounding whitespace) turned into a marker."""
    out: list[list] = []
    for index, part in enumerate(_BREAK_SPLIT.split(text)):
        if index:
            out.append([BREAK, BREAK_WEIGHT])
        out.append([part, 1.0])
    return out


def _merge_equal_weights(pieces: list[list]) -> list[tuple[str, float]]:
    """Join neighbours whose weights compare equal, keeping the first one's weight."""
    merged: list[list] = [list(pieces[0])]
    for text, weight in pieces[1:]:
        if merged[-1][1] == weight:
            merged[-1][0] += text
        else:
            merged.append([text, weight])
    return [(text, float(weight)) for text, weight in merged]


# --- extra networks ----------------------------------------------------------------------------

_EXTRA_NETWORK_TAG = re.compile(r"<(\w+):([^>]+)>")
_LORA_KINDS = {"lora": "lora", "lyco": "lora"}
_NAMED_WEIGHTS = ("te", "unet")


@dataclass(frozen=True)
class ExtraNetwork:
    """One `<lora:...>` tag: which network and how strongly it acts on each model part."""

    kind: str
    name: str
    te_weight: float
    unet_weight: float


def extract_extra_networks(text: str) -> tuple[str, list[ExtraNetwork]]:
    """Cut the `<kind:...>` tags out of a prompt and return the rest with the parsed tags.

    The tags are removed before the attention syntax is read (they are not text for the text
    encoder), and in the order they appear.
    """
    networks: list[ExtraNetwork] = []

    def take(match: re.Match[str]) -> str:
        networks.append(_parse_tag(match.group(0), match.group(1), match.group(2)))
        return ""

    return _EXTRA_NETWORK_TAG.sub(take, text), networks


def _parse_tag(tag: str, kind: str, args: str) -> ExtraNetwork:
    if kind not in _LORA_KINDS:
        what = "hypernetworks are" if kind == "hypernet" else f"extra networks of kind {kind!r} are"
        raise PromptError(f"{tag}: {what} not supported; animdiff reads only <lora:...> and <lyco:...> tags")
    positional, named = _split_tag_args(tag, args)
    if "dyn" in named or len(positional) > 3:
        raise PromptError(f"{tag}: LyCORIS dynamic dimension (dyn) is not supported")
    unknown = sorted(set(named) - set(_NAMED_WEIGHTS))
    if unknown:
        raise PromptError(f"{tag}: unknown argument {unknown[0]!r}; use te= and unet=")
    name = positional[0].strip() if positional else ""
    if not name:
        raise PromptError(f"{tag}: the LoRA name is missing")
    te_weight = _tag_weight(tag, positional[1]) if len(positional) > 1 else 1.0
    if "te" in named:
        te_weight = _tag_weight(tag, named["te"])
    unet_weight = _tag_weight(tag, positional[2]) if len(positional) > 2 else te_weight
    if "unet" in named:
        unet_weight = _tag_weight(tag, named["unet"])
    return ExtraNetwork(_LORA_KINDS[kind], name, te_weight, unet_weight)


def _split_tag_args(tag: str, args: str) -> tuple[list[str], dict[str, str]]:
    """`name:0.8:unet=0.5` -> (["name", "0.8"], {"unet": "0.5"}); a later named value wins."""
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in args.split(":"):
        parts = item.split("=")
        if len(parts) == 2:
            named[parts[0]] = parts[1]
        else:
            positional.append(item)
    return positional, named


def _tag_weight(tag: str, value: str) -> float:
    try:
        weight = float(value)
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight):
        raise PromptError(f"{tag}: weight {value!r} is not a number")
    return weight


def merge_networks(items: Iterable[ExtraNetwork]) -> list[ExtraNetwork]:
    """One entry per LoRA, in order of first appearance.

    The web UI applies a LoRA named twice twice. animdiff collects the tags of every prompt-travel
    keyframe into one set for the whole animation, where writing the same tag in two keyframes
    must not double it, so identical repeats collapse into one. The same LoRA with different
    weights has no single meaning for the animation and is an error.
    """
    merged: dict[tuple[str, str], ExtraNetwork] = {}
    for item in items:
        key = (item.kind, item.name)
        seen = merged.setdefault(key, item)
        if seen != item:
            raise PromptError(
                f"LoRA {item.name!r} appears twice with different weights "
                f"(te {seen.te_weight:g} / unet {seen.unet_weight:g} and "
                f"te {item.te_weight:g} / unet {item.unet_weight:g})"
            )
    return list(merged.values())
