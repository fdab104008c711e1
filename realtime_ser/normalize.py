"""Online per-speaker feature normalisation. Pure: no threads, no runtimes.

A live tracker hears one user for minutes, and per-speaker normalisation is worth
several points of speaker-independent accuracy. The normaliser keeps running
statistics of the current speaker's own *voiced* windows and z-normalises every window
with them. It starts from a prior (the training speakers' average per-speaker mean and
within-speaker variance) weighted as ``prior_weight`` windows, so the first windows
are normalised sensibly and the user's own statistics take over as they accumulate
(the warm-up). After ``max_count`` windows, the statistics become an exponential
moving average with that effective length, so a long session follows slow changes
(another speaker, another microphone).

Training normalises each training speaker by that speaker's own statistics; evaluation
and the runtime use this class, window by window, in stream order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

VAR_FLOOR = 1e-6


@dataclass(frozen=True)
class NormalizerParams:
    prior_mean: np.ndarray
    prior_var: np.ndarray
    prior_weight: float
    max_count: float

    def __post_init__(self) -> None:
        if self.prior_mean.shape != self.prior_var.shape or self.prior_mean.ndim != 1:
            raise ValueError("prior_mean and prior_var must be 1-D arrays of the same length")
        if self.prior_weight <= 0 or self.max_count < self.prior_weight:
            raise ValueError("need prior_weight > 0 and max_count >= prior_weight")

    def to_json(self) -> dict:
        return {
            "type": "online_speaker",
            "prior_mean": [float(v) for v in self.prior_mean],
            "prior_var": [float(v) for v in self.prior_var],
            "prior_weight": float(self.prior_weight),
            "max_count": float(self.max_count),
        }

    @classmethod
    def from_json(cls, d: dict) -> NormalizerParams:
        return cls(prior_mean=np.asarray(d["prior_mean"], dtype=np.float64),
                   prior_var=np.asarray(d["prior_var"], dtype=np.float64),
                   prior_weight=float(d["prior_weight"]), max_count=float(d["max_count"]))


@dataclass
class OnlineNormalizer:
    """Running mean and variance of one speaker's voiced windows, seeded by the prior."""

    params: NormalizerParams
    count: float = field(init=False)
    mean: np.ndarray = field(init=False)
    sq: np.ndarray = field(init=False)  # running mean of x**2
    n_updates: int = field(init=False, default=0)
    prior_share: float = field(init=False, default=1.0)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        p = self.params
        self.count = p.prior_weight
        self.mean = p.prior_mean.astype(np.float64).copy()
        self.sq = (p.prior_var + p.prior_mean**2).astype(np.float64)
        self.n_updates = 0
        self.prior_share = 1.0

    @property
    def warmup(self) -> float:
        """Share of the statistics that comes from this speaker (0 at start, towards 1)."""
        return 1.0 - self.prior_share

    def update(self, x: np.ndarray) -> None:
        """Add one voiced window's feature vector."""
        x = np.asarray(x, dtype=np.float64)
        self.count = min(self.count + 1.0, self.params.max_count)
        rate = 1.0 / self.count
        self.mean += rate * (x - self.mean)
        self.sq += rate * (x * x - self.sq)
        self.prior_share *= 1.0 - rate
        self.n_updates += 1

    def transform(self, x: np.ndarray) -> np.ndarray:
        var = np.maximum(self.sq - self.mean**2, VAR_FLOOR)
        return ((np.asarray(x, dtype=np.float64) - self.mean) / np.sqrt(var)).astype(np.float32)


def speaker_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of one speaker's feature rows (training-time normalisation)."""
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=0), np.maximum(x.var(axis=0), VAR_FLOOR)


# ---------------------------------------------------------------- state export / import (speaker profiles)

STATE_KEYS = ("count", "mean", "sq", "n_updates", "prior_share")


def export_state(norm: OnlineNormalizer) -> dict:
    """The normaliser's running statistics as JSON-ready values (``realtime_ser.profiles``)."""
    return {"count": float(norm.count), "mean": [float(v) for v in norm.mean], "sq": [float(v) for v in norm.sq],
            "n_updates": int(norm.n_updates), "prior_share": float(norm.prior_share)}


def import_state(norm: OnlineNormalizer, state: dict) -> None:
    """Restore ``export_state`` output; ``ValueError`` for a state that does not fit ``norm.params``."""
    n = len(norm.params.prior_mean)
    mean = np.asarray(state["mean"], dtype=np.float64)
    sq = np.asarray(state["sq"], dtype=np.float64)
    count, prior_share = float(state["count"]), float(state["prior_share"])
    if mean.shape != (n,) or sq.shape != (n,):
        raise ValueError(f"statistics of {mean.size} features, expected {n}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(sq)) and np.isfinite(count) and np.isfinite(prior_share)):
        raise ValueError("statistics are not finite")
    if not (1.0 <= count <= norm.params.max_count and 0.0 <= prior_share <= 1.0):
        raise ValueError(f"count {count} or prior share {prior_share} out of range")
    norm.count, norm.mean, norm.sq = count, mean, sq
    norm.n_updates, norm.prior_share = int(state["n_updates"]), prior_share


def state_from_stats(params: NormalizerParams, mean: np.ndarray, var: np.ndarray, n: int) -> dict:
    """The state of a speaker whose ``n`` voiced windows have these statistics (a calibration): the
    adaptation rate as after ``n`` updates, the statistics entirely the speaker's (warm-up complete)."""
    mean = np.asarray(mean, dtype=np.float64)
    var = np.maximum(np.asarray(var, dtype=np.float64), VAR_FLOOR)
    return {"count": float(min(params.prior_weight + n, params.max_count)), "mean": [float(v) for v in mean],
            "sq": [float(v) for v in var + mean**2], "n_updates": int(n), "prior_share": 0.0}

