"""Reading weight files safely.

`.safetensors` files hold tensors only. `.ckpt`/`.pt`/`.pth`/`.bin` files are Python pickles,
which can run arbitrary code when loaded the ordinary way; we only ever load them with
`torch.load(weights_only=True)`, whose unpickler refuses every global that is not on an allow-list.
Published checkpoints were saved by PyTorch Lightning and sometimes carry harmless extras
(a `ModelCheckpoint` callback record, numpy scalars); those few names are allowed explicitly, as
inert stand-ins, so such files load without any "disable safe unpickling" switch.
"""

from __future__ import annotations

import contextlib
import json
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from animdiff.errors import ModelFileError

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
WEIGHT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES


class _InertRecord:
    """Stand-in for a training-time object found in a checkpoint; holds its state, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _inert(module: str, name: str) -> type:
    return type(name, (_InertRecord,), {"__module__": module, "__qualname__": name})


# Training bookkeeping that published SD checkpoints carry next to `state_dict`.
_ALLOWED_RECORDS = [
    _inert("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"),
    _inert("lightning.pytorch.callbacks.model_checkpoint", "ModelCheckpoint"),
]


def _numpy_globals() -> list[Any]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return []
    found: list[Any] = [np.dtype]
    for where in ("numpy.core.multiarray", "numpy._core.multiarray"):
        with contextlib.suppress(ImportError, AttributeError):
            module = __import__(where, fromlist=["scalar"])
            found.append(module.scalar)
    found.extend(type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "float16"))
    return found


def _safe_globals() -> list[Any]:
    return [*_ALLOWED_RECORDS, *_numpy_globals()]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a weight file, on the CPU, in their stored dtype.

    A Lightning-style `{"state_dict": {...}, ...}` wrapper is unwrapped; other non-tensor entries
    are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file")
    raw = _read_safetensors(path) if path.suffix.lower() in SAFETENSORS_SUFFIXES else _read_pickle(path)
    tensors = {k: v for k, v in _unwrap(raw).items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFileError(f"{path}: contains no tensors")
    return tensors


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape without loading tensor data where the format allows it (safetensors header)."""
    path = Path(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        header = read_safetensors_header(path)
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    return {k: tuple(v.shape) for k, v in read_state_dict(path).items()}


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file, checked against the file's real size."""
    try:
        with open(path, "rb") as handle:
            size_bytes = handle.read(8)
            if len(size_bytes) < 8:
                raise ModelFileError(f"{path}: damaged file (too short to be safetensors)")
            (header_len,) = struct.unpack("<Q", size_bytes)
            file_size = path.stat().st_size
            if header_len > file_size - 8:
                raise ModelFileError(f"{path}: damaged file (header runs past the end; truncated download?)")
            header = json.loads(handle.read(header_len))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: damaged safetensors file ({exc})") from None
    data_end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + data_end > file_size:
        raise ModelFileError(
            f"{path}: damaged file: {file_size} bytes, but its header needs {8 + header_len + data_end} "
            "(truncated download?)"
        )
    return header


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    read_safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"{path}: damaged safetensors file ({exc})") from None


def _read_pickle(path: Path) -> Any:
    if zipfile.is_zipfile(path) and _is_torchscript(path):
        raise ModelFileError(f"{path}: a TorchScript program, not a weight file")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=_can_mmap(path))
    except pickle_errors() as exc:
        message = str(exc)
        if "GLOBAL" in message or "weights_only" in message:
            raise ModelFileError(
                f"{path}: refused to load: the file contains Python objects beyond tensors "
                f"({_first_line(message)}). animdiff only loads pickled checkpoints safely; convert "
                "the file to .safetensors with a tool you trust."
            ) from None
        raise ModelFileError(f"{path}: damaged file, cannot be read ({_first_line(message)})") from None


def pickle_errors() -> tuple[type[BaseException], ...]:
    import pickle

    return (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError)


def _can_mmap(path: Path) -> bool:
    """mmap works for the zip container only (not for legacy torch.save files)."""
    return zipfile.is_zipfile(path)


def _is_torchscript(path: Path) -> bool:
    with contextlib.suppress(zipfile.BadZipFile, OSError), zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())
    return False


def is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (such as FILM's film_net_fp16.pt)."""
    return Path(path).suffix.lower() in PICKLE_SUFFIXES and zipfile.is_zipfile(path) and _is_torchscript(path)


def _unwrap(raw: Any) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ModelFileError("the file does not hold a state dict")
    inner = raw.get("state_dict")
    if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
        return inner
    return raw


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "unknown error"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Full SHA-256 of a file (A1111 shows its first 10 hex digits as the model hash)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
