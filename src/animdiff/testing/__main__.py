"""`python -m animdiff.testing DIR`: write an A1111-layout models folder of tiny models.

`python -m animdiff.testing --real-size DIR` writes random weights at the real SD1.5 and
AnimateDiff v2 sizes instead (about 4 GB; for benchmarks), or keeps DIR if it already holds them;
with `--sdxl`, SDXL base and AnimateDiff-XL at their published sizes (about 7.9 GB).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m animdiff.testing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", type=Path, nargs="?", help="models folder to create or fill with tiny models")
    parser.add_argument(
        "--real-size",
        type=Path,
        metavar="DIR",
        help="write real-size SD1.5 + motion module v2 files (random weights, ~4 GB) into DIR instead",
    )
    parser.add_argument(
        "--sdxl",
        action="store_true",
        help="with --real-size: SDXL base (SGM single file) + AnimateDiff-XL instead (~7.9 GB)",
    )
    parser.add_argument(
        "--rewrite", action="store_true", help="with --real-size: write even if DIR already holds them"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.dir is None) == (args.real_size is None):
        parser.error("give either DIR (tiny models) or --real-size DIR")
    if args.sdxl and args.real_size is None:
        parser.error("--sdxl goes with --real-size DIR (the tiny models always include SDXL)")
    if args.real_size is not None:
        from animdiff.testing.real_size import write_real_size_dir

        root = args.real_size
        written = write_real_size_dir(
            root, reuse=not args.rewrite, log=lambda m: print(m, file=sys.stderr), sdxl=args.sdxl
        )
    else:
        from animdiff.testing.factory import write_models_dir

        root = args.dir
        written = write_models_dir(root)
    for path in written.values():
        print(path.relative_to(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
