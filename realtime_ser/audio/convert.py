"""Sample conversion shared by every source: to float32, to mono, and one streaming
resampler to the internal 16 kHz. Pure: no threads, no devices.

Both the microphone and a replayed file hand their raw blocks to one ``Converter``
(inside the pipeline's worker), so a file and a microphone at the same rate produce the
same samples. The resampler is ``soxr.ResampleStream`` (the libsoxr that librosa uses);
its output does not depend on how the input is split into blocks (checked by
``tests/test_convert.py`` for arbitrary splits), and its total output length is the
input length times ``16000 / rate``, rounded, so event times derived from sample counts
stay exact over hours.
"""

from __future__ import annotations

import numpy as np

from .. import SAMPLE_RATE
from ..errors import InputAudioError

MIN_RATE = 8_000
MAX_RATE = 192_000
RESAMPLER_QUALITY = "HQ"  # libsoxr "high quality": ~-100 dB aliasing, a few ms of delay

SEQUENTIAL_MEAN_MAX_CHANNELS = 7  # numpy sums fewer than 8 values per row one by one, from 0.0

_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0, np.dtype(np.int8): 128.0}
_UINT8_OFFSET = 128.0


def to_float32(block: np.ndarray) -> np.ndarray:
    """Integer PCM to float32 in [-1, 1); float input to float32 (values kept as they are)."""
    a = np.asarray(block)
    if a.dtype == np.uint8:
        return ((a.astype(np.float32) - _UINT8_OFFSET) / _UINT8_OFFSET).astype(np.float32)
    scale = _INT_SCALE.get(a.dtype)
    if scale is not None:
        return (a.astype(np.float32) / np.float32(scale)).astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        return a.astype(np.float32, copy=False)
    raise InputAudioError(f"unsupported sample type {a.dtype}; expected 8/16/32-bit integer or float PCM")


def to_mono(block: np.ndarray) -> np.ndarray:
    """``(frames,)`` or ``(frames, channels)`` -> ``(frames,)``: the mean of the channels."""
    if block.ndim == 1:
        return block
    if block.ndim != 2:
        raise InputAudioError(f"audio block has shape {block.shape}; expected (frames, channels)")
    channels = block.shape[1]
    if channels == 1:
        return block[:, 0]
    if channels > SEQUENTIAL_MEAN_MAX_CHANNELS or block.dtype != np.float32:
        return block.mean(axis=1, dtype=np.float32)
    # The same float32 operations as ``block.mean(axis=1)`` (0.0 + c0 + c1 + ..., then / n: the
    # bits are equal, checked by tests/test_convert.py), column by column instead of a reduction
    # over rows of a few values, which costs numpy about five times as much.
    total = np.zeros(len(block), dtype=np.float32)
    for c in range(channels):
        total += block[:, c]
    total /= np.float32(channels)
    return total


def replace_nonfinite(block: np.ndarray) -> tuple[np.ndarray, int]:
    """NaN and +-Inf samples become 0; returns the cleaned block and how many were replaced."""
    bad = ~np.isfinite(block)
    n = int(np.count_nonzero(bad))
    if n:
        block = np.where(bad, np.float32(0.0), block).astype(np.float32)
    return block, n


def check_rate(rate: float, what: str) -> int:
    if not (MIN_RATE <= rate <= MAX_RATE) or int(rate) != rate:
        raise InputAudioError(f"{what} has sample rate {rate} Hz; supported are whole rates from {MIN_RATE} to "
                              f"{MAX_RATE} Hz: resample it first (e.g. `sox in.wav -r 16000 out.wav`)")
    return int(rate)


class Converter:
    """Raw blocks at ``rate`` Hz with any channel count -> 16 kHz mono float32, streaming.

    ``process(block)`` returns the 16 kHz samples that are ready; ``flush()`` at the end
    of a finite stream returns the resampler's tail. ``nonfinite`` counts replaced
    NaN/Inf samples; ``samples_in`` and ``samples_out`` count frames in and out.
    """

    def __init__(self, rate: int, target_rate: int = SAMPLE_RATE) -> None:
        self.rate = check_rate(rate, "the audio source")
        self.target_rate = target_rate
        self.nonfinite = 0
        self.samples_in = 0
        self.samples_out = 0
        self._stream = None
        if self.rate != target_rate:
            import soxr  # light (a C extension), imported only when a source needs resampling

            self._stream = soxr.ResampleStream(self.rate, target_rate, 1, dtype="float32",
                                               quality=RESAMPLER_QUALITY)

    def process(self, block: np.ndarray) -> np.ndarray:
        clean, bad = replace_nonfinite(to_float32(block))
        self.nonfinite += bad
        mono = to_mono(clean)
        self.samples_in += len(mono)
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        out = mono if self._stream is None else self._stream.resample_chunk(mono, last=False)
        self.samples_out += len(out)
        return out

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        out = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self.samples_out += len(out)
        return out
