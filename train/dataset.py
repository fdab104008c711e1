"""Clips -> the runtime's windows -> VAD decision + feature vector per window, cached.

Every clip is cut with ``realtime_ser.audio.windowing.windows_of`` (the windows a stream
of it would give the runtime), analysed once with ``features.analyze``, gated with
the runtime's speech gate (``gate.clip_decisions``: Silero VAD behind the energy stage, docs/gate.md)
and summarised with ``features.functionals``. All windows are kept in the
table with their ``speech`` flag: training uses the voiced ones only; the others are
counted, and serve the utterance-level fallback for a clip without any voiced window.

The seed baseline's features (means over the whole clip of librosa's 40 MFCC,
12 chroma_stft and 128 mel bands, librosa defaults at 16 kHz: 180 values) are computed
here too, one vector per clip.

Both are cached per corpus in ``.npz`` files keyed by everything that changes them
(feature spec hash, VAD parameters, window and hop; librosa version for the seed), and
indexed by each clip's sha256, so a quick run on a few speakers fills the cache that a
full run then completes.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from realtime_ser import features, gate, vad
from realtime_ser.audio.windowing import windows_of

from . import augment
from .data import REPO_ROOT, Clip, DataError

log = logging.getLogger(__name__)

WINDOW_S = 2.0
HOP_S = 0.5
SAMPLE_RATE = features.SAMPLE_RATE
DEFAULT_CACHE_DIR = REPO_ROOT / "reports" / "cache"
CACHE_VERSION = 1  # bump when the layout of the cached arrays changes
CHUNKSIZE = 8  # clips per task sent to a worker process

SEED_N_MFCC = 40
SEED_N_CHROMA = 12
SEED_N_MELS = 128
SEED_N_FEATURES = SEED_N_MFCC + SEED_N_CHROMA + SEED_N_MELS


@dataclass(frozen=True)
class Framing:
    window_s: float = WINDOW_S
    hop_s: float = HOP_S
    sample_rate: int = SAMPLE_RATE

    @property
    def window(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def hop(self) -> int:
        return int(round(self.hop_s * self.sample_rate))


DEFAULT_FRAMING = Framing()  # the defaults of the keyword arguments below (frozen: one shared instance is safe)
DEFAULT_VAD_PARAMS = vad.VadParams()


@dataclass
class WindowTable:
    """All windows of a list of clips. Row arrays are aligned; ``clip_index`` points into ``clips``."""

    corpus: str
    clips: list[Clip]
    X: np.ndarray  # (n, N_FEATURES) float32
    clip_index: np.ndarray  # (n,) int
    window_index: np.ndarray  # (n,) int, position of the window within its clip
    speech: np.ndarray  # (n,) bool, the VAD decision
    voiced_s: np.ndarray  # (n,) float32
    end: np.ndarray  # (n,) int, end sample of the window in its clip
    final: np.ndarray  # (n,) bool, the extra window at the clip's end

    @property
    def n_windows(self) -> int:
        return len(self.X)

    def clip_speakers(self) -> np.ndarray:
        return np.array([c.speaker for c in self.clips])

    def clip_labels(self) -> np.ndarray:
        return np.array([c.label for c in self.clips])

    def speakers(self) -> np.ndarray:
        """Speaker of each window."""
        return self.clip_speakers()[self.clip_index]

    def labels(self) -> np.ndarray:
        """Emotion of each window (its clip's)."""
        return self.clip_labels()[self.clip_index]

    def counts(self) -> dict:
        voiced_per_clip = np.bincount(self.clip_index[self.speech], minlength=len(self.clips))
        return {"clips": len(self.clips), "speakers": len({c.speaker for c in self.clips}),
                "windows": int(self.n_windows), "voiced_windows": int(self.speech.sum()),
                "dropped_windows": int((~self.speech).sum()),
                "clips_without_voiced_window": int(np.sum(voiced_per_clip == 0))}


# ---------------------------------------------------------------- per-clip work (worker processes)


READABLE_FORMATS = {"FLAC": "FLAC", "WAV": "WAV", "OGG": "Ogg (Opus or Vorbis)"}


def read_clip(path: Path, sha256: str | None = None) -> np.ndarray:
    """A clip as float32 samples; ``DataError`` unless it is 16 kHz mono FLAC, WAV or Ogg (Opus)
    (matching ``sha256`` if given)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read clip {path} ({e.strerror})") from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise DataError(f"clip {path} does not match the sha256 in its manifest; restore the corpus")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.format not in READABLE_FORMATS or f.samplerate != SAMPLE_RATE or f.channels != 1:
                raise DataError(f"clip {path} is {f.format} {f.samplerate} Hz {f.channels} channel(s); "
                                f"expected 16 kHz mono {', '.join(READABLE_FORMATS.values())} as the data README says")
            x = f.read(dtype="float32")
    except sf.LibsndfileError as e:
        raise DataError(f"clip {path} is not readable audio ({e})") from None
    if len(x) == 0:
        raise DataError(f"clip {path} holds no samples")
    return x


def clip_windows(x: np.ndarray, framing: Framing, vad_params: vad.VadParams) -> dict[str, np.ndarray]:
    """Features and speech-gate decision (``gate.clip_decisions``, the runtime's) of every runtime window."""
    rows, speech, voiced_s, end, final = [], [], [], [], []
    ws = windows_of(x, framing.window, framing.hop)
    analyses = [features.analyze(w.samples) for w in ws]
    decisions = gate.clip_decisions(x, framing.window, framing.hop, vad_params, analyses=analyses)
    for w, a, d in zip(ws, analyses, decisions, strict=True):
        rows.append(features.functionals(a))
        speech.append(d.speech)
        voiced_s.append(d.voiced_s)
        end.append(w.end)
        final.append(w.final)
    return {"X": np.asarray(rows, dtype=np.float32).reshape(len(rows), features.N_FEATURES),
            "speech": np.asarray(speech, dtype=bool), "voiced_s": np.asarray(voiced_s, dtype=np.float32),
            "end": np.asarray(end, dtype=np.int64), "final": np.asarray(final, dtype=bool)}


def _windows_task(args: tuple) -> dict[str, np.ndarray]:
    path, sha, framing, vad_params, condition, babble = args
    x = read_clip(path, sha)
    if condition != augment.CLEAN:
        x = augment.apply(condition, x, seed_text=sha, babble=lambda: [read_clip(p) for p in babble])
    return clip_windows(x, framing, vad_params)


def seed_vector(x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The seed's 180 clip features: means of librosa 40 MFCC, 12 chroma_stft, 128 mel bands (defaults)."""
    import librosa  # heavy (numba): only for the seed baseline

    mfcc = librosa.feature.mfcc(y=x, sr=sr, n_mfcc=SEED_N_MFCC).mean(axis=1)
    chroma = librosa.feature.chroma_stft(y=x, sr=sr, n_chroma=SEED_N_CHROMA).mean(axis=1)
    mel = librosa.feature.melspectrogram(y=x, sr=sr, n_mels=SEED_N_MELS).mean(axis=1)
    return np.concatenate([mfcc, chroma, mel]).astype(np.float32)


def _seed_task(args: tuple) -> np.ndarray:
    path, sha = args
    return seed_vector(read_clip(path, sha))


# ---------------------------------------------------------------- cache


def _key(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def windows_cache_key(framing: Framing, vad_params: vad.VadParams) -> str:
    return _key({"v": CACHE_VERSION, "spec": features.SPEC_HASH, "vad": asdict(vad_params),
                 "gate": gate.model_sha256(), "framing": asdict(framing)})


def seed_cache_key() -> str:
    import librosa

    version = librosa.__version__  # type: ignore[attr-defined]  # librosa's lazy-loader stub does not declare it
    return _key({"v": CACHE_VERSION, "librosa": version, "sr": SAMPLE_RATE,
                 "n": [SEED_N_MFCC, SEED_N_CHROMA, SEED_N_MELS]})


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, allow_pickle=False, **arrays)
    os.replace(tmp, path)


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as e:
        log.warning("ignoring unreadable cache %s (%s)", path, e)
        return None


def limit_blas_threads() -> None:
    """One BLAS thread in this process: the matrices here are small, and on a shared 2-core machine
    multi-threaded BLAS makes feature extraction and model fitting several times slower."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def _run(task, args: list, jobs: int) -> list:
    if jobs <= 1 or len(args) <= 1:
        return [task(a) for a in args]
    with ProcessPoolExecutor(max_workers=jobs, initializer=limit_blas_threads) as ex:
        return list(ex.map(task, args, chunksize=CHUNKSIZE))


WINDOW_FIELDS = ("X", "speech", "voiced_s", "end", "final")


def windows_cache_path(cache_dir: Path, corpus: str, framing: Framing, vad_params: vad.VadParams,
                       condition: str = augment.CLEAN) -> Path:
    """The cache file of one corpus under one audio condition (clean, or an ``augment`` condition)."""
    key = windows_cache_key(framing, vad_params)
    if condition == augment.CLEAN:
        return Path(cache_dir) / f"windows-{corpus}-{key}.npz"
    return Path(cache_dir) / f"windows-{corpus}-{condition}-{augment.condition_key(condition)}-{key}.npz"


def load_windows(corpus: str, clips: list[Clip], *, framing: Framing = DEFAULT_FRAMING,
                 vad_params: vad.VadParams = DEFAULT_VAD_PARAMS, cache_dir: Path | None = DEFAULT_CACHE_DIR,
                 jobs: int = 1, condition: str = augment.CLEAN, babble_pool: list[Clip] | None = None) -> WindowTable:
    """The window table of ``clips`` (one corpus), computing only what the cache lacks.

    ``condition`` other than ``clean`` runs every clip through ``augment.apply`` first (seeded by the
    clip's sha256, so a clip always gets the same augmentation); babble is mixed from clips of
    ``babble_pool`` (default ``clips``) by *other* speakers than the clip's own."""
    t0 = time.perf_counter()
    augment.check_condition(condition)
    cache_path = None if cache_dir is None else windows_cache_path(cache_dir, corpus, framing, vad_params, condition)
    per_clip: dict[str, dict[str, np.ndarray]] = {}
    cached = _load_npz(cache_path) if cache_path else None
    if cached is not None:
        off = cached["offsets"]
        for i, sha in enumerate(cached["sha"]):
            per_clip[str(sha)] = {k: cached[k][off[i]:off[i + 1]] for k in WINDOW_FIELDS}
    todo = {c.sha256: c for c in clips if c.sha256 not in per_clip}
    if todo:
        log.info("%s/%s: computing windows of %d clip(s) (%d in the cache)", corpus, condition, len(todo),
                 len({c.sha256 for c in clips}) - len(todo))
        pool = list(babble_pool if babble_pool is not None else clips)
        args = [(c.path, c.sha256, framing, vad_params, condition,
                 augment.babble_sources(condition, c, pool)) for c in todo.values()]
        results = _run(_windows_task, args, jobs)
        per_clip.update(zip(todo, results, strict=True))
        if cache_path:
            shas = list(per_clip)
            lens = [len(per_clip[s]["X"]) for s in shas]
            arrays = {k: np.concatenate([per_clip[s][k] for s in shas]) for k in WINDOW_FIELDS}
            arrays["X"] = arrays["X"].reshape(-1, features.N_FEATURES)
            _save_npz(cache_path, {"sha": np.array(shas), "offsets": np.concatenate([[0], np.cumsum(lens)]),
                                   **arrays})
    parts = [per_clip[c.sha256] for c in clips]
    lens = [len(p["X"]) for p in parts]
    table = WindowTable(
        corpus=corpus, clips=list(clips),
        X=np.concatenate([p["X"] for p in parts]).reshape(-1, features.N_FEATURES).astype(np.float32),
        clip_index=np.repeat(np.arange(len(clips)), lens),
        window_index=np.concatenate([np.arange(n) for n in lens]).astype(np.int64),
        speech=np.concatenate([p["speech"] for p in parts]).astype(bool),
        voiced_s=np.concatenate([p["voiced_s"] for p in parts]).astype(np.float32),
        end=np.concatenate([p["end"] for p in parts]).astype(np.int64),
        final=np.concatenate([p["final"] for p in parts]).astype(bool))
    log.info("%s: %d windows of %d clips in %.1f s", corpus, table.n_windows, len(clips), time.perf_counter() - t0)
    return table


def load_seed_features(corpus: str, clips: list[Clip], *, cache_dir: Path | None = DEFAULT_CACHE_DIR,
                       jobs: int = 1) -> np.ndarray:
    """``(len(clips), 180)`` seed baseline vectors, computing only what the cache lacks."""
    t0 = time.perf_counter()
    cache_path = None if cache_dir is None else Path(cache_dir) / f"seed-{corpus}-{seed_cache_key()}.npz"
    per_clip: dict[str, np.ndarray] = {}
    cached = _load_npz(cache_path) if cache_path else None
    if cached is not None:
        per_clip = {str(s): v for s, v in zip(cached["sha"], cached["X"], strict=True)}
    todo = {c.sha256: c for c in clips if c.sha256 not in per_clip}
    if todo:
        log.info("%s: computing seed features of %d clip(s)", corpus, len(todo))
        per_clip.update(zip(todo, _run(_seed_task, [(c.path, c.sha256) for c in todo.values()], jobs),
                                 strict=True))
        if cache_path:
            shas = list(per_clip)
            _save_npz(cache_path, {"sha": np.array(shas), "X": np.stack([per_clip[s] for s in shas])})
    X = np.stack([per_clip[c.sha256] for c in clips]).astype(np.float32)
    log.info("%s: seed features of %d clips in %.1f s", corpus, len(clips), time.perf_counter() - t0)
    return X
