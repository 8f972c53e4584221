"""The `animdiff` command.

`generate` flags are derived from the settings model (`--loop-number` is `Params.loop_number`),
so the CLI cannot drift from the API or the web UI: a flag left out takes the model's default.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from animdiff.errors import AnimdiffError
from animdiff.params import Params, make_params

# Params field -> flag name, where the flag is not simply the field name with dashes.
FLAG_NAMES = {
    "cfg_scale": "--cfg",
    "negative_prompt": "--negative",
    "formats": "--format",
    "motion_loras": "--motion-lora",
    "gif_gifsicle": "--gifsicle",
}
POSITIONAL = {"prompt"}


def _flag(field: str) -> str:
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


def _base_type(annotation: Any) -> Any:
    """int / float / str / bool / list out of `int | None`, `Literal[...]`, `list[...]`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0])
    if origin is typing.Literal:
        return str
    if origin is list:
        return list
    return annotation


def _add_params_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Params.model_fields.items():
        if name in POSITIONAL:
            continue
        kind = _base_type(field.annotation)
        literal = (
            typing.get_args(field.annotation)
            if typing.get_origin(field.annotation) is typing.Literal
            else None
        )
        help_text = (field.description or "") + _default_text(field)
        options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind is list and name == "motion_loras":
            options.update(action="append", metavar="NAME[:STRENGTH]")
        elif kind is list:
            options.update(metavar="LIST")
        else:
            options["type"] = kind
            if literal:
                options["choices"] = literal
        parser.add_argument(_flag(name), **options)


def _default_text(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return f" (default: {','.join(map(str, value)) if value else 'none'})"
    return "" if field.default is None else f" (default: {field.default})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="animdiff", description="Animations with Stable Diffusion and AnimateDiff."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    generate = commands.add_parser("generate", help="render an animation from a prompt")
    generate.add_argument("prompt", nargs="?", help="the prompt (or use --prompt-file)")
    generate.add_argument("--prompt-file", type=Path, help="read the prompt from a file ('-' for stdin)")
    generate.add_argument("--models-dir", type=Path, help="models folder laid out like A1111's")
    generate.add_argument(
        "--out", type=Path, default=Path("outputs"), help="output folder (default: outputs)"
    )
    generate.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    generate.add_argument(
        "--window-batch", type=int, default=1, help="context windows per UNet call (default: 1)"
    )
    generate.add_argument(
        "--film-model", type=Path, help="path of film_net_fp16.pt (default: search the models folder)"
    )
    generate.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_params_flags(generate)

    models = commands.add_parser("models", help="list the model files found and what each one is")
    models.add_argument("--models-dir", type=Path, required=True)
    return parser


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt_file is not None:
        if args.prompt is not None:
            raise AnimdiffError("give the prompt as an argument or with --prompt-file, not both")
        if str(args.prompt_file) == "-":
            return sys.stdin.read()
        try:
            return args.prompt_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise AnimdiffError(f"cannot read prompt file {args.prompt_file}: {exc.strerror}") from None
    return args.prompt or ""


def params_from_args(args: argparse.Namespace) -> Params:
    values = {
        name: getattr(args, name) for name in Params.model_fields if hasattr(args, name) and name != "prompt"
    }
    values["prompt"] = _read_prompt(args)
    return make_params(values)


def run_generate(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    from animdiff.pipeline import Animator, RunOptions

    options = RunOptions(device=args.device, windows_per_call=args.window_batch, film_model=args.film_model)
    animator = Animator(args.models_dir, args.out, options)
    with _ProgressBar(disabled=args.quiet) as bar:
        result = animator.run(params, progress=bar.update)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"seed {result.seed}")
    for fmt, path in result.files.items():
        print(f"{fmt}: {path}")
    return 0


class _ProgressBar:
    """tqdm over the sampling steps, plus a one-line note for the other phases."""

    def __init__(self, disabled: bool) -> None:
        self.disabled = disabled
        self.bar: Any = None
        self.phase = ""

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def update(self, event: Any) -> None:
        if self.disabled:
            return
        from tqdm import tqdm

        if event.phase != self.phase:
            self._close()
            self.phase = event.phase
            if event.total:
                self.bar = tqdm(
                    total=event.total, desc=event.phase, unit="step", file=sys.stderr, leave=False
                )
        if self.bar is not None and event.total:
            self.bar.total = event.total
            self.bar.n = event.step
            self.bar.refresh()


def run_models(args: argparse.Namespace) -> int:
    from animdiff.models.store import ModelStore

    for entry in ModelStore(args.models_dir).inventory():
        print(f"{entry.relative}\t{entry.describe()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "generate":
            return run_generate(args)
        return run_models(args)
    except AnimdiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
