"""Test helpers: a tiny real ONNX model with its card, generated audio, and a slow model.

``build_model(directory)`` trains a real (small) classifier and exports it exactly as
the shipped model is exported: scikit-learn -> skl2onnx (``zipmap=False``, input
``"features"``) + a JSON card with the current ``features.SPEC_HASH``. Two kinds:

* ``kind="pitch"`` (default): fitted on features of synthetic voices, so it really
  tells low (``sad``), middle (``neutral``) and high (``happy``) voices apart: replay
  tests can check that a change of voice changes the smoothed emotion at the right time.
* ``kind="random"``: fitted on random feature vectors (cheap; content is meaningless).

No corpus needed: all audio comes from ``voice``, ``noise`` and ``tone``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SR = 16_000
PITCH_LABELS = ("neutral", "happy", "sad")
LOW_F0, MID_F0, HIGH_F0 = 110.0, 180.0, 300.0  # sad, neutral, happy voices
TRAIN_WINDOWS_PER_CLASS = 8
TRAIN_WINDOW_S = 2.0
VOICE_AMPLITUDE = 0.3
SYLLABLE_HZ = 4.0
F0_GLIDE = 0.05  # slow F0 movement: +-5 %, so the three voices stay apart


# ---------------------------------------------------------------- audio


def voice(f0: float, seconds: float, sr: int = SR, amplitude: float = VOICE_AMPLITUDE, seed: int = 0) -> np.ndarray:
    """A synthetic talker at ``f0`` (``bench.formant_voice``: vowels through moving formants, fricatives,
    4 Hz syllables). Plain harmonic tones are refused by the neural speech gate, as music and hums are."""
    from realtime_ser.bench import formant_voice

    return formant_voice(f0, seconds, amplitude=amplitude, seed=seed, syllable_hz=SYLLABLE_HZ, f0_glide=F0_GLIDE,
                         sr=sr)


def noise(seconds: float, dbfs: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """White noise at an RMS of ``dbfs`` (a full-scale sine is -3 dBFS)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(round(seconds * sr))) * 10 ** (dbfs / 20)).astype(np.float32)


def tone(freq: float, seconds: float, sr: int = SR, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_audio(path: Path, x: np.ndarray, sr: int = SR, subtype: str | None = None) -> Path:
    import soundfile as sf

    sf.write(str(path), x, sr, subtype=subtype)
    return path


# ---------------------------------------------------------------- model


@functools.lru_cache(maxsize=8)
def _training_data(kind: str, labels: tuple[str, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    from realtime_ser import features

    rng = np.random.default_rng(seed)
    if kind == "random":
        n = 20 * len(labels)
        return rng.standard_normal((n, features.N_FEATURES)).astype(np.float32), np.arange(n) % len(labels)
    f0_by_label = {"sad": LOW_F0, "neutral": MID_F0, "happy": HIGH_F0}
    xs, ys = [], []
    for i, label in enumerate(labels):
        for j in range(TRAIN_WINDOWS_PER_CLASS):
            f0 = f0_by_label[label] * rng.uniform(0.93, 1.07)
            amp = rng.uniform(0.05, 0.5)
            xs.append(features.extract(voice(f0, TRAIN_WINDOW_S, amplitude=amp, seed=seed * 1000 + i * 100 + j)))
            ys.append(i)
    return np.array(xs, dtype=np.float32), np.array(ys)


def build_model(directory: Path, kind: str = "pitch", labels: Sequence[str] = PITCH_LABELS,
                normalization: str = "none", name: str = "tiny", seed: int = 0) -> Path:
    """Train, export and write ``directory/<name>.onnx`` and its card; returns the .onnx path."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from realtime_ser import features
    from realtime_ser.normalize import NormalizerParams

    x, y = _training_data(kind, tuple(labels), seed)
    x = x.copy()
    norm_json: dict = {"type": "none"}
    if normalization == "online_speaker":
        params = NormalizerParams(prior_mean=x.mean(axis=0).astype(np.float64),
                                  prior_var=np.maximum(x.var(axis=0), 1e-6).astype(np.float64),
                                  prior_weight=5.0, max_count=200.0)
        norm_json = params.to_json()
        x = ((x - params.prior_mean) / np.sqrt(params.prior_var)).astype(np.float32)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    clf.fit(x, y)
    onx = convert_sklearn(clf, initial_types=[("features", FloatTensorType([None, features.N_FEATURES]))],
                          options={id(clf): {"zipmap": False}}, target_opset=17)
    directory.mkdir(parents=True, exist_ok=True)
    onnx_path = directory / f"{name}.onnx"
    from realtime_ser.model import with_label_checksum

    onnx_path.write_bytes(with_label_checksum(onx.SerializeToString(), labels))
    card = {
        "name": name,
        "labels": list(labels),
        "sample_rate": features.SAMPLE_RATE,
        "window_s": 2.0,
        "hop_s": 0.5,
        "feature_spec": {"hash": features.SPEC_HASH},
        "input_width": features.N_FEATURES,
        "normalization": norm_json,
        "vad": {"min_voiced_s": 0.3, "floor_dbfs": -50.0},
        "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
    }
    onnx_path.with_suffix(".json").write_text(json.dumps(card, indent=1), encoding="utf-8")
    return onnx_path


class SlowModel:
    """Wraps a model; every ``predict_proba`` first sleeps ``delay_s`` (overload tests)."""

    def __init__(self, model, delay_s: float) -> None:
        self._model = model
        self.delay_s = delay_s
        self.calls = 0

    def __getattr__(self, name: str):
        return getattr(self._model, name)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        time.sleep(self.delay_s)
        return self._model.predict_proba(x)


# ---------------------------------------------------------------- events


def load_schema(name: str = "events") -> dict:
    """``realtime_ser/schema/<name>.schema.json`` (``events``: listen's lines; ``predict``: predict's)."""
    from importlib import resources

    return json.loads(resources.files("realtime_ser").joinpath(f"schema/{name}.schema.json").read_text("utf-8"))


def comparable(events: list[dict]) -> list[dict]:
    """Events without the fields that legitimately vary between runs (queue depth, timing)."""
    volatile = {"queue_depth", "queue_capacity", "latency_ms", "callback_max_ms"}
    return [{k: v for k, v in e.items() if k not in volatile} for e in events]


# ---------------------------------------------------------------- the CLI as a subprocess


def cli_command() -> list[str]:
    """How to run the installed ``realtime-ser`` (or ``python -m realtime_ser`` without the script)."""
    import shutil
    import sys

    script = Path(sys.executable).parent / "realtime-ser"
    found = str(script) if script.exists() else shutil.which("realtime-ser")
    return [found] if found is not None else [sys.executable, "-m", "realtime_ser"]


def parse_lines(text: str, what: str = "") -> list[dict]:
    """Every stdout line as a JSON object; an AssertionError naming the first line that is not one."""
    prefix = f"{what} " if what else ""
    events = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError as e:
            raise AssertionError(f"{prefix}stdout line {number} is not JSON ({e}): {line[:200]!r}") from None
        assert isinstance(event, dict), f"{prefix}stdout line {number} is not a JSON object: {line[:200]!r}"
        events.append(event)
    return events


def of_type(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e.get("type") == kind]


# ---------------------------------------------------------------- comparing implementations
#
# THE RULE (docs/testing.md): two implementations of the same arithmetic (the compiled kernel vs the
# numpy reference, the portable vs the AVX2 build, our reduction vs numpy's, the runtime vs librosa)
# are compared with ``np.testing.assert_allclose`` and tolerances written in the test, and their
# discrete decisions (a frame active or voiced, a window speech) as a bounded count of threshold
# flips (``flips``): never bit identity. Exact equality only for one code path against itself
# (determinism: the same input twice, another block split, a copy, a cache hit).


def flips(a: np.ndarray, b: np.ndarray) -> int:
    """How many decisions differ between two boolean arrays of one shape (threshold flips)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    assert a.shape == b.shape, f"decision arrays of different shapes: {a.shape} vs {b.shape}"
    return int(np.count_nonzero(a != b))
