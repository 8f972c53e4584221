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
    check_readable(path)
    raw = _read_safetensors(path) if path.suffix.lower() in SAFETENSORS_SUFFIXES else _read_pickle(path)
    tensors = {k: v for k, v in _unwrap(raw, path).items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ModelFileError(f"{path}: contains no tensors")
    return tensors


def check_readable(path: Path) -> None:
    """Say plainly when a file is missing, empty or not ours to read, before any parser guesses.

    A parser's own message for these cases ("unknown error", "damaged file") sends the user
    looking for corruption when the real problem is a path, a permission or an aborted copy.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not path.is_file():
        raise ModelFileError(f"{path}: not a file")
    if size == 0:
        raise ModelFileError(f"{path}: empty file (0 bytes; an interrupted download or copy?)")
    try:
        with open(path, "rb"):
            pass
    except PermissionError as exc:
        raise ModelFileError(f"{path}: permission denied (cannot open the file for reading)") from exc


def read_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape without loading tensor data where the format allows it (safetensors header)."""
    path = Path(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        check_readable(path)
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
    except PermissionError as exc:
        raise ModelFileError(f"{path}: permission denied (cannot open the file for reading)") from exc
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(
            f"{path}: damaged safetensors file (its header is not valid JSON: {exc})"
        ) from exc
    data_end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + data_end > file_size:
        raise ModelFileError(
            f"{path}: damaged file: {file_size} bytes, but its header needs {8 + header_len + data_end} "
            "(truncated download?)"
        )
    return header


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except MemoryError as exc:
        raise ModelFileError(f"{path}: not enough memory to load the file") from exc
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except SafetensorError as exc:
        raise ModelFileError(f"{path}: damaged safetensors file ({_first_line(str(exc))})") from exc


# The first bytes of every file `torch.save` has written: a zip archive, or a pickle stream
# (protocol 2+ starts with 0x80) for the legacy format.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


def _read_pickle(path: Path) -> Any:
    if zipfile.is_zipfile(path) and _is_torchscript(path):
        raise ModelFileError(f"{path}: a TorchScript program, not a weight file")
    _require_torch_save_format(path)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=_can_mmap(path))
    except MemoryError as exc:
        raise ModelFileError(f"{path}: not enough memory to load the file") from exc
    except PermissionError as exc:
        raise ModelFileError(f"{path}: permission denied (cannot open the file for reading)") from exc
    except pickle_errors() as exc:
        message = str(exc)
        if isinstance(exc, RuntimeError) and _is_out_of_memory(message):
            raise ModelFileError(
                f"{path}: not enough memory to load the file ({_first_line(message)})"
            ) from exc
        if "GLOBAL" in message or "weights_only" in message:
            raise ModelFileError(
                f"{path}: refused to load: the file contains Python objects beyond tensors "
                f"({_unsafe_name(message)}). animdiff only loads pickled checkpoints safely; convert "
                "the file to .safetensors with a tool you trust."
            ) from exc
        raise ModelFileError(f"{path}: damaged file, cannot be read ({_first_line(message)})") from exc


def _require_torch_save_format(path: Path) -> None:
    """Refuse files that are not `torch.save` output before the unpickler sees them.

    Otherwise a text or HTML file renamed `.ckpt` (a saved error page is common) reaches the
    unpickler, whose message suggests turning safe loading off: advice we never give.
    """
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        return
    kind = "a text file" if _looks_like_text(path) else "not a PyTorch checkpoint"
    raise ModelFileError(
        f"{path}: {kind}: a {path.suffix} weight file starts with a zip or pickle header, this one "
        f"starts with {head!r} (an error page saved in place of the download?)"
    )


def _looks_like_text(path: Path) -> bool:
    with open(path, "rb") as handle:
        sample = handle.read(512)
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in sample


def _is_out_of_memory(message: str) -> bool:
    lowered = message.lower()
    return "out of memory" in lowered or "can't allocate memory" in lowered or "cannot allocate" in lowered


def _unsafe_name(message: str) -> str:
    """The refused global's name from torch's message, without its advice to disable safety."""
    for line in message.splitlines():
        line = line.strip()
        if "GLOBAL" in line or "Unsupported global" in line:
            return line.split(" was not an allowed global")[0][:200]
    return "an object that is not a tensor"


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


def _unwrap(raw: Any, path: Path) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ModelFileError(
            f"{path}: holds a {type(raw).__name__}, not a state dict (a mapping of names to tensors)"
        )
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
