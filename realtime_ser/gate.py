"""The speech gate: does a window hold speech? Silero VAD (a small neural net) behind a cheap energy stage.

One gate for training and the runtime (``train/dataset.py`` calls ``clip_decisions``, the stream
calls ``SpeechGate.decide`` window after window: the same code, the same decisions). Two stages:

1. **Energy** (free: it reads the frame analysis the features are computed from): a window with
   less than ``VadParams.min_active_s`` of frames above ``floor_dbfs`` is silence; the neural
   net does not run and its state is reset (so silence costs nothing).
2. **Silero VAD** (``SileroVAD``: the MIT-licensed ONNX model shipped in ``realtime_ser/silero``,
   its convolutions rewritten as matrix products, run by onnxruntime, no torch): a speech probability
   per 32 ms frame (512 samples at 16 kHz), its recurrent state carried from hop to hop, so each window
   costs only the frames of audio it adds. A window is speech when at least ``min_speech_s`` of its
   frames have a probability of ``gate_threshold`` or more,
3. and its voiced frames are not those of a **closed mouth**: humming keeps almost all its energy
   below 1 kHz (no open vowel), and the network takes some hummed tunes for speech. When the lower
   quartile of the voiced frames' alpha ratio (50-1000 Hz over 1-5 kHz, a kernel descriptor, free)
   is above ``closed_mouth_alpha_db``, the window is not speech.

``VadResult.voiced_s`` stays the feature kernel's own voicing (it weights the smoothing);
``speech_s`` and ``max_prob`` are the neural stage's figures. See docs/gate.md.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import features
from .audio.windowing import Window, windows_of
from .errors import ModelError
from .vad import VadParams, VadResult

SILERO_DIR = Path(__file__).resolve().parent / "silero"
# Silero's silero_vad_16k_sequence.onnx with its convolutions rewritten as matrix products
# (scripts/derive_gate_model.py): the same network and weights, 3x cheaper to run (docs/gate.md, Cost)
DEFAULT_MODEL_PATH = SILERO_DIR / "silero_vad_16k_matmul.onnx"
SILERO_RATE = 16_000  # the shipped model is the 16 kHz one
FRAME = 512  # samples per Silero frame at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous frame prefixed to each frame (Silero's own layout)
STATE_SHAPE = (1, 1, 128)  # LSTM h and c
FRAME_S = FRAME / SILERO_RATE
TILT_QUANTILE = 0.25  # the window's more open-mouthed voiced frames (their lower quartile)
_ALPHA = features._SHAPE["alpha_ratio_db"]  # column of FrameAnalysis.shape


@functools.lru_cache(maxsize=4)
def model_sha256(model_path: Path | str = DEFAULT_MODEL_PATH) -> str:
    """sha256 of the gate's model file (training caches are keyed by it)."""
    import hashlib

    return hashlib.sha256(Path(model_path).read_bytes()).hexdigest()


def _quantile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, 100 * q)`` (linear method), the same float to the bit (numpy's own
    interpolation formula), for the gate's short arrays at a tenth of its cost."""
    s = np.sort(values)
    pos = (len(s) - 1) * q
    lo = int(pos)
    if lo + 1 >= len(s):
        return float(s[lo])
    g = pos - lo
    diff = s[lo + 1] - s[lo]
    return float(s[lo + 1] - diff * (1 - g)) if g >= 0.5 else float(s[lo] + diff * g)


class GateError(ModelError):
    """The speech-gate model is missing or unreadable (a model error: exit code 4, one line)."""


@functools.lru_cache(maxsize=4)
def _session(model_path: str) -> Any:
    """One onnxruntime session per model file and process (sessions are thread-safe for ``run``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # the model's unused initialisers would warn at every load
    try:
        return ort.InferenceSession(model_path, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        first_line = str(e).strip().splitlines()[:1] or [type(e).__name__]
        raise GateError(f"cannot load the speech-gate model {model_path} ({first_line[0]}); "
                        "reinstall realtime-ser (the model ships in realtime_ser/silero)") from None


class SileroVAD:
    """Silero VAD as a stream: feed samples, get one speech probability per complete 512-sample frame.

    Like silero's ``VADIterator``: ``__call__`` carries the LSTM state and the 64-sample context
    from call to call; samples that do not fill a frame wait for the next call. ``reset_states``
    starts a new stream. All new frames of one call go through the model in one ONNX run.
    """

    def __init__(self, *, model_path: Path | str = DEFAULT_MODEL_PATH) -> None:
        self.model_path = Path(model_path)
        self.session = _session(str(self.model_path))
        self.reset_states()

    def reset_states(self) -> None:
        self._h = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(CONTEXT, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self.frames_done = 0  # complete frames processed since the last reset

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Speech probabilities (float32) of the frames completed by ``samples`` (possibly none)."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if len(self._pending):
            x = np.concatenate([self._pending, x])
        n = len(x) // FRAME
        self._pending = x[n * FRAME:].copy()
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        frames = x[: n * FRAME].reshape(n, FRAME)
        block = np.empty((n, CONTEXT + FRAME), dtype=np.float32)
        block[:, CONTEXT:] = frames
        block[0, :CONTEXT] = self._context
        if n > 1:
            block[1:, :CONTEXT] = frames[:-1, -CONTEXT:]
        self._context = frames[-1, -CONTEXT:].copy()
        probs, self._h, self._c = self.session.run(["speech_probs", "hn", "cn"],
                                                   {"input": block, "h": self._h, "c": self._c})
        self.frames_done += n
        return np.asarray(probs, dtype=np.float32).reshape(-1)


class SpeechGate:
    """The speech decision for the consecutive windows of one stream (or one clip).

    ``decide`` must see the windows in stream order; a window that does not follow the previous
    one (overload skipped some, or a new stream) resets the neural state and analyses the whole
    window once. Frames are placed on the stream's sample clock, so the decisions depend on
    sample counts only, never on block sizes.
    """

    def __init__(self, params: VadParams | None = None, *, model_path: Path | str = DEFAULT_MODEL_PATH) -> None:
        self.params = params if params is not None else VadParams()
        self.vad = SileroVAD(model_path=model_path)
        self.reset()

    def reset(self) -> None:
        self.vad.reset_states()
        self._origin = 0  # stream sample where the neural stream (frame 0) starts
        self._fed = 0  # stream samples up to here have been given to the neural stream
        self._probs = np.zeros(0, dtype=np.float32)  # kept frame probabilities ...
        self._first = 0  # ... of neural frames [first, first + len(probs))
        self.neural_windows = 0  # windows that reached the neural stage

    def _frame_probs(self, start: int, end: int) -> np.ndarray:
        """Probabilities of the neural frames lying wholly inside stream samples [start, end)."""
        lo = max(0, -(-(start - self._origin) // FRAME))  # first frame starting at or after start
        hi = (end - self._origin) // FRAME  # frames ending at or before end
        lo, hi = max(lo, self._first), min(hi, self._first + len(self._probs))
        if hi <= lo:
            return self._probs[:0]
        return self._probs[lo - self._first: hi - self._first]

    def decide(self, window: Window, analysis: features.FrameAnalysis) -> VadResult:
        """The decision for ``window`` (stream order), whose frame analysis is ``analysis``."""
        p = self.params
        loud = analysis.active & (analysis.energy_db >= p.floor_dbfs)
        active_s = float(np.count_nonzero(loud)) * features.HOP / features.SAMPLE_RATE
        voiced_s = float(np.count_nonzero(loud & analysis.voiced)) * features.HOP / features.SAMPLE_RATE
        level = float(analysis.level_db)
        first_sample = max(0, window.end - len(window.samples))
        if active_s < p.min_active_s:  # stage 1: silence, nothing for the net to hear
            self.vad.reset_states()
            self._origin = self._fed = window.end
            self._probs, self._first = self._probs[:0], 0
            return VadResult(speech=False, voiced_s=voiced_s, level_dbfs=level)
        if self._fed < first_sample or self._fed > window.end:  # not the continuation: start afresh
            self.vad.reset_states()
            self._origin = self._fed = first_sample
            self._probs, self._first = self._probs[:0], 0
        new = window.samples[len(window.samples) - (window.end - self._fed):]
        probs = self.vad(new)
        self._fed = window.end
        if len(probs):
            # frames that end before this window starts are no longer needed
            keep_from = min(max(0, (first_sample - self._origin) // FRAME - self._first), len(self._probs))
            self._probs = np.concatenate([self._probs[keep_from:], probs])
            self._first += keep_from
        self.neural_windows += 1
        inside = self._frame_probs(first_sample, window.end)
        speech_s = float(np.count_nonzero(inside >= p.gate_threshold)) * FRAME_S
        max_prob = float(inside.max()) if len(inside) else 0.0
        assert analysis.shape is not None, "the frame analysis carries no spectral-shape descriptors"
        tilt = analysis.shape[loud & analysis.voiced, _ALPHA]
        tilt_db = _quantile(tilt, TILT_QUANTILE) if len(tilt) else 0.0
        speech = speech_s >= p.min_speech_s and tilt_db <= p.closed_mouth_alpha_db
        return VadResult(speech=speech, voiced_s=voiced_s, level_dbfs=level, speech_s=speech_s, max_prob=max_prob,
                         tilt_db=tilt_db)


def clip_decisions(x: np.ndarray, window: int, hop: int, params: VadParams | None = None,
                   analyses: Sequence[features.FrameAnalysis] | None = None, *,
                   model_path: Path | str = DEFAULT_MODEL_PATH) -> list[VadResult]:
    """The gate's decision for every runtime window of a whole clip (``windows_of(x, window, hop)``),
    exactly as a stream of the clip would get them. ``analyses``: the windows' frame analyses,
    if the caller already has them (training does); computed here otherwise."""
    gate = SpeechGate(params, model_path=model_path)
    ws = windows_of(np.asarray(x, dtype=np.float32).reshape(-1), window, hop)
    if analyses is not None and len(analyses) != len(ws):
        raise ValueError(f"{len(analyses)} analyses for {len(ws)} windows")
    return [gate.decide(w, analyses[i] if analyses is not None else features.analyze(w.samples))
            for i, w in enumerate(ws)]


__all__ = ["SileroVAD", "SpeechGate", "clip_decisions", "GateError", "DEFAULT_MODEL_PATH", "FRAME"]
