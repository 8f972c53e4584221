"""`python -m animdiff.testing DIR`: write an A1111-layout models folder of tiny models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from animdiff.testing.factory import write_models_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m animdiff.testing", description=__doc__)
    parser.add_argument("dir", type=Path, help="models folder to create or fill")
    args = parser.parse_args(argv)
    for path in write_models_dir(args.dir).values():
        print(path.relative_to(args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
