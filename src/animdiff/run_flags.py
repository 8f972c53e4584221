"""The command-line flags of `RunOptions` (how to run, not what to draw), shared by `generate` and
`serve`, so both offer the same memory options with the same words."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--window-batch", type=int, default=1, help="context windows per UNet call (default: 1)"
    )
    parser.add_argument(
        "--offload",
        action="store_true",
        help="keep the models in CPU memory, each on the device only for its phase (less device "
        "memory; one host-to-device copy of each model per job)",
    )
    parser.add_argument(
        "--fp8",
        action="store_true",
        help="store the UNet's and motion module's Linear/Conv weights as float8, cast per layer "
        "(A1111's FP8 weight: about half the UNet's device memory against float16; weights rounded)",
    )
    parser.add_argument(
        "--vae-chunk",
        type=int,
        help="frames per VAE call (default: by size, 512x512 float32 pixels a call: 1 frame "
        "from 363x363 up, 4 at 256x256, at most 8; fewer: less memory)",
    )
    parser.add_argument(
        "--vae-tiling",
        action="store_true",
        help="decode each frame in 512-pixel tiles that overlap (for large sizes; slower, faint seams "
        "possible)",
    )
    parser.add_argument(
        "--film-model", type=Path, help="path of film_net_fp16.pt (default: search the models folder)"
    )


#: `RunOptions` field -> the parsed flag's attribute; its keys are every run option these flags set.
FLAG_OF_FIELD = {
    "windows_per_call": "window_batch",
    "film_model": "film_model",
    "offload": "offload",
    "fp8": "fp8",
    "vae_chunk": "vae_chunk",
    "vae_tiling": "vae_tiling",
}
RUN_FIELDS = tuple(FLAG_OF_FIELD)


def run_flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """`RunOptions` fields from the parsed flags (the device is each caller's own)."""
    return {field: getattr(args, flag) for field, flag in FLAG_OF_FIELD.items()}
