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

from animdiff import __version__
from animdiff.choices import VIDEO_FORMATS
from animdiff.errors import AnimdiffError, ParamsError
from animdiff.params import NOT_BUILT_FIELDS, Params, validate_params
from animdiff.run_flags import add_run_flags, run_flag_values

# Params field -> flag name, where the flag is not simply the field name with dashes.
FLAG_NAMES = {
    "cfg_scale": "--cfg",
    "negative_prompt": "--negative",
    "formats": "--format",
    "motion_loras": "--motion-lora",
    "controlnet_units": "--controlnet",
    "gif_gifsicle": "--gifsicle",
}
POSITIONAL = {"prompt"}
METAVARS = {
    "video_source": "FILE",
    "video_path": "DIR",
    "init_image": "FILE",
    "last_frame": "FILE",
    "mask_path": "DIR",
    "denoising_strength": "0..1",
}
# The CLI writes files; "frame" (every frame as PNG bytes in an answer) exists for the HTTP API.
CLI_FORMATS = (*VIDEO_FORMATS, "txt")
USAGE_ERROR = 2  # the command line itself is malformed (argparse's convention)
INPUT_ERROR = 1  # the settings, files or environment are wrong


def flag(field: str) -> str:
    """The command-line flag of a settings field (`cfg_scale` -> `--cfg`)."""
    if field in POSITIONAL:
        return field
    return FLAG_NAMES.get(field, "--" + field.replace("_", "-"))


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one `error:` line with where to find help, not the whole usage."""

    def error(self, message: str) -> typing.NoReturn:
        print(f"error: {message} (see: {self.prog} --help)", file=sys.stderr)
        raise SystemExit(USAGE_ERROR)


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
        if name == "formats":
            help_text = f"outputs, comma-separated: {', '.join(CLI_FORMATS)}" + _default_text(field)
        if name in NOT_BUILT_FIELDS:
            help_text = argparse.SUPPRESS  # refused until built: --help must not offer it
        options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif kind is list and name == "motion_loras":
            options.update(action="append", metavar="NAME[:STRENGTH]")
        elif kind is list and name == "controlnet_units":
            options.update(action="append", metavar="KEY=VALUE,...")
        elif kind is list:
            options.update(metavar="LIST")
        else:
            options["type"] = kind
            if name in METAVARS:
                options["metavar"] = METAVARS[name]
            if literal:
                options["choices"] = literal
        parser.add_argument(flag(name), **options)


def _default_text(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return f" (default: {','.join(map(str, value)) if value else 'none'})"
    return "" if field.default is None else f" (default: {field.default})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="animdiff", description="Animations with Stable Diffusion and AnimateDiff.")
    parser.add_argument("--version", action="version", version=f"animdiff {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    generate = commands.add_parser("generate", help="render an animation from a prompt")
    generate.add_argument("prompt", nargs="?", help="the prompt (or use --prompt-file)")
    generate.add_argument("--prompt-file", type=Path, help="read the prompt from a file ('-' for stdin)")
    generate.add_argument(
        "--from-infotext",
        type=Path,
        metavar="FILE",
        help="take the settings from a file animdiff or A1111 wrote (TXT, PNG, GIF, WEBP, MP4, WEBM); "
        "other flags override them",
    )
    generate.add_argument("--models-dir", type=Path, help="models folder laid out like A1111's")
    generate.add_argument(
        "--demo",
        action="store_true",
        help="use the bundled demo model (coloured shapes moving: 'a red ball moving right'); no models "
        "folder needed; size, frames, steps, CFG and sampler default to the demo model's own",
    )
    generate.add_argument(
        "--out", type=Path, default=Path("outputs"), help="output folder (default: outputs)"
    )
    generate.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when available)")
    add_run_flags(generate)
    generate.add_argument("--quiet", action="store_true", help="no progress display and no summary")
    _add_params_flags(generate)

    models = commands.add_parser("models", help="list the model files found and what each one is")
    models.add_argument("--models-dir", type=Path, required=True)

    from animdiff.server.cli import add_serve_command

    add_serve_command(commands)

    from animdiff.batch import add_batch_command

    add_batch_command(commands)
    return parser


def _read_prompt(args: argparse.Namespace) -> str | None:
    """The prompt from the argument or the file; None when neither was given."""
    if args.prompt_file is not None:
        if args.prompt is not None:
            raise ParamsError("give the prompt as an argument or with --prompt-file, not both")
        if str(args.prompt_file) == "-":
            text = sys.stdin.read()
        else:
            try:
                text = args.prompt_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ParamsError(f"cannot read prompt file {args.prompt_file}: {exc.strerror}") from None
        # An editor's final newline is not part of the prompt (it would be a blank line in every infotext).
        return text.rstrip("\r\n")
    return args.prompt


def params_from_args(args: argparse.Namespace) -> Params:
    """Settings from the flags, on top of `--from-infotext`'s when given; errors name the flags."""
    values: dict[str, Any] = {}
    if getattr(args, "demo", False):
        from animdiff.demo.defaults import demo_settings

        values.update(demo_settings())
    if getattr(args, "from_infotext", None) is not None:
        from animdiff.output.infotext import params_from_infotext
        from animdiff.output.read_back import infotext_from_file

        values.update(params_from_infotext(infotext_from_file(args.from_infotext)))
    values.update(
        {
            name: getattr(args, name)
            for name in Params.model_fields
            if hasattr(args, name) and name != "prompt"
        }
    )
    prompt = _read_prompt(args)
    if prompt is not None:
        values["prompt"] = prompt
    elif "prompt" not in values:
        raise ParamsError("no prompt: give one as an argument, with --prompt-file or with --from-infotext")
    if "frame" in _format_names(values.get("formats")):
        raise ParamsError(
            "--format frame is for the HTTP API (every frame as PNG bytes in the answer); "
            "on the command line use png for frame files"
        )
    return validate_params(values, label=flag)


def _format_names(value: Any) -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    return [str(item).strip().lower() for item in items]


def run_generate(args: argparse.Namespace) -> int:
    params = params_from_args(args)
    from animdiff.cli_progress import JobProgress
    from animdiff.pipeline import Animator, RunOptions, phase_totals

    options = RunOptions(device=args.device, **run_flag_values(args))
    animator = Animator(_models_dir(args), args.out, options)
    if animator.store.note and not args.quiet:
        print(animator.store.note, file=sys.stderr)
    job = animator.prepare(params)
    if not args.quiet:
        for line in job.summary():
            print(line, file=sys.stderr)
    for warning in job.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    display = JobProgress(phase_totals(job), enabled=not args.quiet)
    try:
        result = animator.execute(job, progress=display)
    except BaseException:
        display.finish(ok=False)
        raise
    display.finish()
    for warning in result.warnings[len(job.warnings) :]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"seed {result.seed}")
    for fmt, path in result.files.items():
        print(f"{fmt}: {path}")
    return 0


def _models_dir(args: argparse.Namespace) -> Path | None:
    if not getattr(args, "demo", False):
        return args.models_dir
    if args.models_dir is not None:
        raise ParamsError("--demo uses the bundled demo model; leave out --models-dir")
    from animdiff.demo.model import weights_dir

    return weights_dir()


def run_models(args: argparse.Namespace) -> int:
    from animdiff.models.store import ModelStore

    store = ModelStore(args.models_dir)
    if store.note:
        print(store.note, file=sys.stderr)
    from animdiff.control.annotators import annotator_file_users, annotator_report
    from animdiff.control.preprocess import ANNOTATOR_DIR

    users = annotator_file_users()
    for entry in store.inventory():
        folder, _, name = entry.relative.partition("/")
        what = entry.describe()
        if folder == ANNOTATOR_DIR and name in users:
            what = f"ControlNet preprocessor weights ({', '.join(users[name])})"
        print(f"{entry.relative}\t{what}")
    for name, problem in annotator_report(store.root):
        print(f"preprocessor {name}\t{'ready' if problem is None else 'not available: ' + problem}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a malformed command line (already printed)
        return exit_.code if isinstance(exit_.code, int) else USAGE_ERROR
    try:
        if args.command == "generate":
            return run_generate(args)
        if args.command == "batch":
            from animdiff.batch import run_batch

            return run_batch(args)
        if args.command == "serve":
            from animdiff.server.cli import run_serve

            return run_serve(args)
        return run_models(args)
    except AnimdiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return INPUT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
