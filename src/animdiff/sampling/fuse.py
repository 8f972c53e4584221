"""Combining the outputs of overlapping context windows into one output per frame.

The A1111 extension does not average windows: each window's output overwrites its frames, so the
last window covering a frame decides it ("overwrite", the default, reproduced exactly). Averaging
("flat") or weighting each window's middle frames above its edges ("pyramid", as FreeNoise and
ComfyUI do) smooths the seams between windows instead; both are opt-in.
"""

from __future__ import annotations

import torch

from animdiff.choices import FUSE_METHODS


def window_weights(method: str, length: int) -> list[float]:
    """Per-position weights of a window of `length` frames for the weighted fuse methods.

    A window's edge frames saw fewer neighbours than its middle ones, so "pyramid" trusts the
    middle more (1, 2, ..., peak, ..., 2, 1); "flat" trusts every position equally.
    "overwrite" replaces instead of weighting, so it has no weights.
    """
    if length < 1:
        raise ValueError(f"a window has at least one frame, got length {length}")
    if method == "flat":
        return [1.0] * length
    if method == "pyramid":
        rising = [float(i) for i in range(1, (length + 1) // 2 + 1)]
        falling = rising[: length // 2][::-1]
        return rising + falling
    if method == "overwrite":
        raise ValueError("'overwrite' replaces frames, it has no weights")
    raise ValueError(f"unknown fuse method {method!r}; choose one of {', '.join(FUSE_METHODS)}")


def _last_positions(indices: list[int]) -> tuple[list[int], list[int]]:
    """Each distinct frame with the last window position holding it.

    Torch leaves the winner of an index assignment with repeated indices unspecified; picking
    the later position explicitly matches the reference's sequential semantics on every device.
    """
    last: dict[int, int] = {}
    for position, frame in enumerate(indices):
        last.pop(frame, None)
        last[frame] = position
    return list(last), list(last.values())


class WindowFuser:
    """Collects window outputs for all frames of one model evaluation and fuses them per frame.

    Frames no window covered stay zero, as in the reference's output buffer. A frame only one
    window covered keeps that window's output bit for bit under every method: weighting it and
    dividing the weight out again would round it (3 x / 3 is not always x), so that a video that
    fits one window would come out differently under "pyramid" than under "overwrite".
    """

    def __init__(self, method: str, like: torch.Tensor) -> None:
        """`like` fixes the frame count (dim 0), the per-frame shape, the device and the dtype."""
        if method not in FUSE_METHODS:
            raise ValueError(f"unknown fuse method {method!r}; choose one of {', '.join(FUSE_METHODS)}")
        self.method = method
        self.frames = like.shape[0]
        self._frame_shape = tuple(like.shape[1:])
        self._dtype = like.dtype
        self._weighted = method != "overwrite"
        self._buffer = torch.zeros_like(like, dtype=self._accumulator_dtype(like.dtype))
        self._weight_sums = torch.zeros(self.frames, dtype=self._buffer.dtype, device=like.device)
        if self._weighted:  # each frame's last output as given, and how many outputs it had
            self._latest = torch.zeros_like(self._buffer)
            self._counts = torch.zeros(self.frames, dtype=torch.long, device=like.device)

    def _accumulator_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """Weighted sums accumulate in at least float32 so half-precision outputs lose nothing."""
        return torch.promote_types(dtype, torch.float32) if self._weighted else dtype

    def add(self, indices: list[int], output: torch.Tensor) -> None:
        """Take one window's output; row i of `output` belongs to frame `indices[i]`."""
        self._check(indices, output)
        self._dtype = output.dtype  # the reference's buffer follows the model's output dtype
        if not indices:
            return
        if self._weighted:
            self._accumulate(indices, output)
        else:
            self._overwrite(indices, output)

    def result(self) -> torch.Tensor:
        """The fused frames, in the dtype of the last window output (of `like` if none came)."""
        if not self._weighted:
            return self._buffer.to(self._dtype)
        shape = (self.frames,) + (1,) * len(self._frame_shape)
        sums = self._weight_sums.reshape(shape)
        fused = torch.where(sums > 0, self._buffer / sums.clamp_min(1e-12), torch.zeros_like(self._buffer))
        fused = torch.where(self._counts.reshape(shape) == 1, self._latest, fused)
        return fused.to(self._dtype)

    def _overwrite(self, indices: list[int], output: torch.Tensor) -> None:
        """Last writer wins, between windows and between repeats inside one window."""
        frames, positions = _last_positions(indices)
        rows = output[torch.tensor(positions, device=output.device)]
        self._buffer = self._buffer.to(output.dtype)
        self._buffer[torch.tensor(frames, device=self._buffer.device)] = rows.to(self._buffer.device)

    def _accumulate(self, indices: list[int], output: torch.Tensor) -> None:
        """Add weight x output per frame; a frame repeated inside a window counts once per repeat."""
        device = self._buffer.device
        index = torch.tensor(indices, device=device)
        weights = torch.tensor(
            window_weights(self.method, len(indices)), dtype=self._buffer.dtype, device=device
        )
        shape = (len(indices),) + (1,) * len(self._frame_shape)
        rows = output.to(self._buffer)
        self._buffer.index_add_(0, index, rows * weights.reshape(shape))
        self._weight_sums.index_add_(0, index, weights)
        self._latest.index_copy_(0, index, rows)
        self._counts.index_add_(0, index, torch.ones_like(index))

    def _check(self, indices: list[int], output: torch.Tensor) -> None:
        """Mismatched windows are programming errors; fail loudly instead of fusing wrong rows."""
        if output.shape[0] != len(indices) or tuple(output.shape[1:]) != self._frame_shape:
            raise ValueError(
                f"window output of shape {tuple(output.shape)} does not fit {len(indices)} frames "
                f"of shape {self._frame_shape}"
            )
        if any(not 0 <= frame < self.frames for frame in indices):
            raise ValueError(f"window indices {indices} fall outside 0..{self.frames - 1}")
