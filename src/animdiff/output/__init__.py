"""Everything a finished animation is written as: files on disk, API bytes and infotext."""

from animdiff.output.encode import ENCODABLE, encode
from animdiff.output.infotext import build_infotext, params_from_infotext, parse_infotext
from animdiff.output.options import OutputOptions
from animdiff.output.png import encode_frames_png
from animdiff.output.save import WriteResult, write_animation
from animdiff.output.writers import FORMAT_ORDER

__all__ = [
    "ENCODABLE",
    "FORMAT_ORDER",
    "OutputOptions",
    "WriteResult",
    "build_infotext",
    "encode",
    "encode_frames_png",
    "params_from_infotext",
    "parse_infotext",
    "write_animation",
]
