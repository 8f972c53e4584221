"""Video-to-video inputs: video files and frame folders, resize modes, near-duplicate dropping,
and the ControlNet preprocessors (model-based ones through the optional annotators extra).

Each job lives in its own module (`video` reads any source, `videofile`/`animation`/`folder` one
kind each, `resize`, `decimate`, `preprocess`, `annotators`); this package re-exports what callers use.
"""

from animdiff.control.annotators import (
    AnnotatorsNotInstalledError,
    AnnotatorWeightsError,
    AnnotatorWeightsMissingError,
    annotator_folder,
    annotator_problem,
    check_annotator,
)
from animdiff.control.decimate import REFERENCE_DECIMATE, Decimate, drop_near_duplicates, is_near_duplicate
from animdiff.control.folder import IMAGE_EXTENSIONS, list_frame_files, natural_sort_key
from animdiff.control.preprocess import (
    DEFAULT_PROCESSOR_RES,
    PREPROCESSORS,
    PROCESSOR_RES_SLIDER,
    AnnotatorWeights,
    Preprocessor,
    PreprocessorError,
    Slider,
    find_preprocessor,
    pixel_perfect_resolution,
    preprocess_frames,
    run_preprocessor,
)
from animdiff.control.resize import Placement, ResizeMode, placement, resize_frame
from animdiff.control.source import VideoInfo, VideoInputError
from animdiff.control.video import iter_video_frames, probe_video, read_video_frames

__all__ = [
    "DEFAULT_PROCESSOR_RES",
    "IMAGE_EXTENSIONS",
    "PREPROCESSORS",
    "PROCESSOR_RES_SLIDER",
    "REFERENCE_DECIMATE",
    "AnnotatorWeights",
    "AnnotatorWeightsError",
    "AnnotatorWeightsMissingError",
    "AnnotatorsNotInstalledError",
    "Decimate",
    "Placement",
    "Preprocessor",
    "PreprocessorError",
    "ResizeMode",
    "Slider",
    "VideoInfo",
    "VideoInputError",
    "annotator_folder",
    "annotator_problem",
    "check_annotator",
    "drop_near_duplicates",
    "find_preprocessor",
    "is_near_duplicate",
    "iter_video_frames",
    "list_frame_files",
    "natural_sort_key",
    "pixel_perfect_resolution",
    "placement",
    "preprocess_frames",
    "probe_video",
    "read_video_frames",
    "resize_frame",
    "run_preprocessor",
]
