"""Cross-corpus evaluation: leave one corpus out, three adaptation modes, robustness, within-corpus folds.

* **Corpora** are every folder of the data root with a manifest (``data.discover_corpora``); a
  corpus can be kept for evaluation only (``eval_only``: held out and scored, never trained on).
* **Labels**: a ``LabelSet`` maps corpus emotions onto the model's classes (``calm`` counted as
  ``neutral`` by default); clips of other emotions are left out.
* **Outer fold** = one held-out corpus. The model is fitted on the voiced windows of the other
  (trainable) corpora, optionally with their ``aug`` windows; each (corpus, class) gets the same total
  weight. The held-out corpus is scored at utterance level (mean of a clip's voiced-window
  probabilities, all windows if none is voiced) on the classes it shares with the model, in three modes:
  ``population`` (features normalised by the prior alone: no adaptation), ``per_file`` (a fresh
  ``OnlineNormalizer`` per clip, as ``predict`` sees a file) and ``per_speaker`` (one normaliser per
  speaker carried across that speaker's clips in a seeded random order: exactly the runtime's online
  normaliser, ``realtime_ser.normalize``).
* **Hyper-parameters** are chosen inside each outer fold by an inner leave-one-corpus-out over its
  training corpora only (``per_speaker`` UA, clean audio); the held-out corpus is never looked at.
* **Robustness**: the same outer models scored on the held-out corpus under ``augment.TEST_CONDITIONS``.
* **Within corpus**: RAVDESS 6 folds and EmoDB leave-one-speaker-out on the model's label set, with
  the same recipe; parameters chosen by speaker-grouped inner CV on the training speakers.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import GroupKFold

from realtime_ser.normalize import NormalizerParams, OnlineNormalizer

from . import augment
from .data import PROTOCOL_CORPORA, Clip, DataError, discover_corpora, load_folds, load_manifest
from .dataset import DEFAULT_CACHE_DIR, DEFAULT_FRAMING, Framing, WindowTable, limit_blas_threads, load_windows
from .evaluate import (
    CorpusData,
    normalizer_prior,
    per_speaker_normalise,
    simulate_online,
    speaker_order_seed,
    utterance_proba,
)
from .metrics import classification_figures, unweighted_accuracy
from .xrecipes import get_xrecipe

log = logging.getLogger(__name__)

MODES = ("population", "per_file", "per_speaker")
SELECT_MODE = "per_speaker"
WITHIN_INNER_FOLDS = 3
# TurEV-DB: CC BY-NC-ND 4.0 in its README (GPL-3.0 in its LICENSE file). A model trained on it is a
# derivative, which the no-derivatives clause forbids; scoring a model on it is not. Evaluation only.
DEFAULT_EVAL_ONLY = ("turev",)


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: tuple[str, ...]
    merge: dict = field(default_factory=dict)  # corpus emotion -> model class

    def map(self, emotion: str) -> str | None:
        lab = self.merge.get(emotion, emotion)
        return lab if lab in self.labels else None


LABEL_SETS = {
    "4": LabelSet("4", ("neutral", "happy", "sad", "angry"), {"calm": "neutral"}),
    "5s": LabelSet("5s", ("neutral", "happy", "sad", "angry", "surprised"), {"calm": "neutral"}),
    "5f": LabelSet("5f", ("neutral", "happy", "sad", "angry", "fearful"), {"calm": "neutral"}),
    # calm kept apart: to measure whether calm and neutral are separable across corpora
    "5c": LabelSet("5c", ("neutral", "calm", "happy", "sad", "angry")),
}
DEFAULT_LABEL_SET = "4"


@dataclass(frozen=True)
class CrossConfig:
    data_root: Path
    recipe: str = "logreg"
    label_set: str = DEFAULT_LABEL_SET
    augment: bool = False
    eval_only: tuple[str, ...] = DEFAULT_EVAL_ONLY
    corpora: tuple[str, ...] | None = None  # default: every corpus in the data root
    robustness: bool = True
    within: bool = True
    jobs: int = 2
    cache_dir: Path | None = DEFAULT_CACHE_DIR
    framing: Framing = Framing()
    params: dict | None = None  # fixed hyper-parameters: skip the inner selection (quick experiments)
    train_norm: str = "speaker"  # see training_rows


# ---------------------------------------------------------------- data


@dataclass
class Pool:
    """Every kept clip of every corpus under each audio condition (same clip order in each)."""

    labels: list[str]
    by_condition: dict[str, CorpusData]
    clip_corpus: np.ndarray  # (n_clips,) str
    clips: list[Clip]


def _mapped(clips: list[Clip], ls: LabelSet) -> list[Clip]:
    out = []
    for c in clips:
        lab = ls.map(c.label)
        if lab is not None:
            out.append(Clip(corpus=c.corpus, clip_id=c.clip_id, path=c.path, speaker=c.speaker, label=lab,
                            duration_s=c.duration_s, sha256=c.sha256))
    return out


def load_pool(root, corpora: tuple[str, ...], ls: LabelSet, conditions: tuple[str, ...], *, cache_dir, jobs: int,
              framing: Framing = DEFAULT_FRAMING) -> Pool:
    """Windows of the clips whose emotion maps onto ``ls``, per corpus and condition (cached)."""
    tables: dict[str, list[WindowTable]] = {c: [] for c in conditions}
    kept: list[Clip] = []
    for corpus in corpora:
        raw = load_manifest(root, corpus)
        clips = _mapped(raw, ls)
        if not clips:
            log.warning("%s shares no class with label set %s; left out", corpus, ls.name)
            continue
        # Babble for a clip is mixed from other speakers' clips of the whole corpus (any emotion), so the
        # cached augmentation of a clip does not depend on the label set.
        for cond in conditions:
            t = load_windows(corpus, clips, framing=framing, cache_dir=cache_dir, jobs=jobs, condition=cond,
                             babble_pool=raw)
            tables[cond].append(t)
        kept += clips
    labels = list(ls.labels)
    by_condition = {cond: CorpusData.from_tables(cond, ts, labels) for cond, ts in tables.items()}
    corpus_of = np.array([c.corpus for c in kept])
    # Speakers carry their corpus as a prefix; with a single corpus from_tables leaves it out: add it.
    for d in by_condition.values():
        if len(tables[conditions[0]]) == 1:
            d.clip_speaker = np.array([f"{c}/{s}" for c, s in zip(corpus_of, d.clip_speaker, strict=True)])
    return Pool(labels=labels, by_condition=by_condition, clip_corpus=corpus_of, clips=kept)


# ---------------------------------------------------------------- fit


def class_corpus_weights(corpus: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row weights giving every (corpus, class) cell the same total weight; mean weight 1."""
    keys = np.char.add(np.char.add(corpus.astype(str), "|"), y.astype(str))
    _, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]
    return w * (len(w) / w.sum())


TRAIN_NORMS = ("speaker", "online", "speaker+prior")


def training_rows(pool: Pool, clips: np.ndarray, use_aug: bool, train_norm: str = "speaker"):
    """(X, y, weights, prior) from the voiced windows of ``clips`` (clean, plus aug).

    ``train_norm``: ``speaker`` = every speaker (and condition) z-normalised by its own statistics;
    ``online`` = normalised as the runtime would (one ``OnlineNormalizer`` per speaker, clips in seeded
    order), so training sees the warm-up too; ``speaker+prior`` = the ``speaker`` rows plus the same rows
    normalised by the prior alone (what the model sees before adapting)."""
    Xs, ys, cs, gs, parts = [], [], [], [], []
    conds = ["clean"] + (["aug"] if use_aug else [])
    for cond in conds:
        d = pool.by_condition[cond]
        rows = np.flatnonzero(np.isin(d.clip_index, clips) & d.speech)
        parts.append((d, rows))
        Xs.append(d.X[rows])
        ys.append(d.window_y()[rows])
        cs.append(pool.clip_corpus[d.clip_index[rows]])
        gs.append(np.char.add(d.window_speakers()[rows].astype(str), f"|{cond}"))
    X, y, corpus, groups = (np.concatenate(v) for v in (Xs, ys, cs, gs))
    clean = np.char.endswith(groups, "|clean")
    prior = normalizer_prior(X[clean], groups[clean])  # the runtime's prior: clean training speakers
    if train_norm == "speaker":
        Xn = per_speaker_normalise(X, groups)
    elif train_norm == "online":
        Xn = np.concatenate([simulate_online(d, rows, prior) for d, rows in parts])
    elif train_norm == "speaker+prior":
        Xp = ((X - prior.prior_mean) / np.sqrt(prior.prior_var)).astype(np.float32)
        Xn = np.concatenate([per_speaker_normalise(X, groups), Xp])
        y, corpus = np.concatenate([y, y]), np.concatenate([corpus, corpus])
    else:
        raise ValueError(f"unknown training normalisation {train_norm!r}; expected one of {TRAIN_NORMS}")
    return Xn, y, class_corpus_weights(corpus, y), prior


def fit(recipe: str, params: dict, pool: Pool, clips: np.ndarray, use_aug: bool, train_norm: str | None = None):
    X, y, w, prior = training_rows(pool, clips, use_aug, train_norm or _POOL.get("train_norm", "speaker"))
    model = get_xrecipe(recipe).build(**params)
    model.fit(X, y, **{f"{model.steps[-1][0]}__sample_weight": w})
    return model, prior


# ---------------------------------------------------------------- predict in the three modes


def normalise_rows(data: CorpusData, rows: np.ndarray, prior: NormalizerParams, mode: str) -> np.ndarray:
    if mode == "population":
        return ((data.X[rows] - prior.prior_mean) / np.sqrt(prior.prior_var)).astype(np.float32)
    if mode == "per_speaker":
        return simulate_online(data, rows, prior)
    if mode == "per_file":
        out = np.empty((len(rows), data.X.shape[1]), dtype=np.float32)
        ci = data.clip_index[rows]
        starts = np.flatnonzero(np.r_[True, ci[1:] != ci[:-1]])
        ends = np.r_[starts[1:], len(rows)]
        for a, b in zip(starts, ends, strict=True):  # windows of one clip are contiguous and in time order
            norm = OnlineNormalizer(prior)
            for i in range(a, b):
                r = rows[i]
                if data.speech[r]:
                    norm.update(data.X[r])
                out[i] = norm.transform(data.X[r])
        return out
    raise ValueError(f"unknown mode {mode!r}")


def score_clips(model, prior, data: CorpusData, clips: np.ndarray, mode: str, labels: list[str]):
    """(clip probabilities, fallback mask) of ``clips`` under ``mode``."""
    rows = np.flatnonzero(np.isin(data.clip_index, clips))
    X = normalise_rows(data, rows, prior, mode)
    P = np.zeros((len(rows), len(labels)))
    P[:, model.classes_.astype(int)] = model.predict_proba(X)
    return utterance_proba(P, data.speech[rows], data.clip_index[rows], clips)


def figures(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Figures on the classes present in ``y_true`` (the ones the held-out corpus shares with the model)."""
    present = [lab for i, lab in enumerate(labels) if np.any(y_true == i)]
    if not np.all(np.isin(y_pred, [labels.index(p) for p in present])):
        # A prediction outside the shared classes is an error; show it as its own column.
        shown = labels
    else:
        shown = present
    f = classification_figures([labels[i] for i in y_true], [labels[i] for i in y_pred], shown)
    f["ua"] = float(np.mean([f["per_class_recall"][lab] for lab in present]))
    return f


# ---------------------------------------------------------------- fold tasks

_POOL: dict = {}  # the pool (and run settings) the fold tasks read; inherited by forked workers


def _pool() -> Pool:
    return _POOL["pool"]


def select(recipe: str, pool: Pool, clips: np.ndarray, use_aug: bool) -> tuple[dict, list]:
    """Inner leave-one-corpus-out over the corpora of ``clips`` (per-speaker UA, clean audio)."""
    rec = get_xrecipe(recipe)
    corpora = sorted(set(pool.clip_corpus[clips]))
    if len(rec.grid) == 1 or len(corpora) < 2:
        return dict(rec.grid[0]), []
    d = pool.by_condition["clean"]
    scores: list[dict[str, Any]] = []
    for params in rec.grid:
        per = {}
        for inner in corpora:
            tr = clips[pool.clip_corpus[clips] != inner]
            va = clips[pool.clip_corpus[clips] == inner]
            model, prior = fit(recipe, params, pool, tr, use_aug)
            U, _ = score_clips(model, prior, d, va, SELECT_MODE, pool.labels)
            per[inner] = unweighted_accuracy(d.clip_y[va], U.argmax(axis=1))
        scores.append({"params": dict(params), "inner_ua": float(np.mean(list(per.values()))), "per_corpus": per})
    best = max(range(len(scores)), key=lambda i: scores[i]["inner_ua"])
    return dict(rec.grid[best]), scores


def run_outer(held_out: str, recipe: str, use_aug: bool, trainable: tuple[str, ...], conditions: tuple[str, ...],
              params: dict | None) -> dict:
    pool = _pool()
    t0 = time.perf_counter()
    is_train = np.isin(pool.clip_corpus, [c for c in trainable if c != held_out])
    train_clips = np.flatnonzero(is_train)
    test_clips = np.flatnonzero(pool.clip_corpus == held_out)
    inner: list = []
    if params is None:
        params, inner = select(recipe, pool, train_clips, use_aug)
    t1 = time.perf_counter()
    model, prior = fit(recipe, params, pool, train_clips, use_aug)
    t2 = time.perf_counter()
    d = pool.by_condition["clean"]
    y = d.clip_y[test_clips]
    out: dict[str, Any] = {"held_out": held_out, "params": params, "inner": inner, "modes": {}, "conditions": {},
           "clips": test_clips, "y": y}
    for mode in MODES:
        U, fb = score_clips(model, prior, d, test_clips, mode, pool.labels)
        out["modes"][mode] = {"pred": U.argmax(axis=1), "fallback": int(fb.sum())}
    for cond in conditions:
        if cond == "clean":
            continue
        U, fb = score_clips(model, prior, pool.by_condition[cond], test_clips, SELECT_MODE, pool.labels)
        out["conditions"][cond] = {"pred": U.argmax(axis=1), "fallback": int(fb.sum())}
    out["cpu_s"] = {"select": t1 - t0, "fit": t2 - t1, "predict": time.perf_counter() - t2}
    return out


def run_within(corpus: str, fold: int, test_speakers: list[str], recipe: str, use_aug: bool,
               params: dict | None) -> dict:
    pool = _pool()
    d = pool.by_condition["clean"]
    in_corpus = pool.clip_corpus == corpus
    test_set = {f"{corpus}/{s}" for s in test_speakers}
    is_test = in_corpus & np.isin(d.clip_speaker, list(test_set))
    train_clips = np.flatnonzero(in_corpus & ~is_test)
    test_clips = np.flatnonzero(is_test)
    inner: list = []
    if params is None:
        rec = get_xrecipe(recipe)
        spk = d.clip_speaker[train_clips]
        cv = GroupKFold(n_splits=min(WITHIN_INNER_FOLDS, len(set(spk))))
        scores = []
        for p in rec.grid:
            s = []
            for tr, va in cv.split(train_clips, groups=spk):
                m, pr = fit(recipe, p, pool, train_clips[tr], use_aug)
                U, _ = score_clips(m, pr, d, train_clips[va], SELECT_MODE, pool.labels)
                s.append(unweighted_accuracy(d.clip_y[train_clips[va]], U.argmax(axis=1)))
            scores.append(float(np.mean(s)))
        params = dict(rec.grid[int(np.argmax(scores))]) if len(rec.grid) > 1 else dict(rec.grid[0])
        inner = [{"params": dict(p), "inner_ua": s} for p, s in zip(rec.grid, scores, strict=True)]
    model, prior = fit(recipe, params, pool, train_clips, use_aug)
    U, fb = score_clips(model, prior, d, test_clips, SELECT_MODE, pool.labels)
    return {"corpus": corpus, "fold": fold, "params": params, "inner": inner, "clips": test_clips,
            "y": d.clip_y[test_clips], "pred": U.argmax(axis=1), "fallback": int(fb.sum())}


def _call(task):
    fn, args = task
    return fn(*args)


def _init(pool: Pool | None) -> None:
    limit_blas_threads()
    if pool is not None:
        _POOL["pool"] = pool


# ---------------------------------------------------------------- the whole run


def evaluate_cross(cfg: CrossConfig) -> dict:
    t_start = time.perf_counter()
    ls = LABEL_SETS[cfg.label_set]
    corpora = tuple(cfg.corpora or discover_corpora(cfg.data_root))
    trainable = tuple(c for c in corpora if c not in cfg.eval_only)
    conditions = ("clean",) + (("aug",) if cfg.augment else ()) + (augment.TEST_CONDITIONS if cfg.robustness else ())
    t0 = time.perf_counter()
    pool = load_pool(cfg.data_root, corpora, ls, conditions, cache_dir=cfg.cache_dir, jobs=cfg.jobs,
                     framing=cfg.framing)
    timing = {"features_s": time.perf_counter() - t0}
    present = [c for c in corpora if np.any(pool.clip_corpus == c)]
    tasks: list[tuple[Callable[..., dict], tuple]] = [
        (run_outer, (h, cfg.recipe, cfg.augment, trainable, conditions, cfg.params)) for h in present]
    within_protocols = {}
    if cfg.within:
        for corpus in PROTOCOL_CORPORA:
            if corpus not in present:
                continue
            try:
                folds = load_folds(Path(cfg.data_root), corpus)
            except DataError as e:  # a corpus without its protocol file only skips that protocol
                log.warning("no within-corpus protocol for %s (%s)", corpus, e)
                continue
            by_fold: dict[int, list[str]] = {}
            for s, f in folds.items():
                by_fold.setdefault(f, []).append(s)
            within_protocols[corpus] = by_fold
            tasks += [(run_within, (corpus, f, sorted(s), cfg.recipe, cfg.augment, cfg.params))
                      for f, s in sorted(by_fold.items())]
    t0 = time.perf_counter()
    _POOL["train_norm"] = cfg.train_norm
    if cfg.jobs > 1:
        _POOL["pool"] = pool  # inherited by the forked workers
        with ProcessPoolExecutor(max_workers=cfg.jobs, initializer=_init, initargs=(None,)) as ex:
            results = list(ex.map(_call, tasks))
    else:
        _init(pool)
        results = [_call(t) for t in tasks]
    timing["folds_wall_s"] = time.perf_counter() - t0
    labels = pool.labels
    outer = [r for r in results if "held_out" in r]
    cross: dict[str, dict[str, Any]] = {"corpora": {}, "mean": {}}
    robustness: dict[str, dict[str, Any]] = {"corpora": {}, "mean": {}}
    for r in outer:
        h = r["held_out"]
        cross["corpora"][h] = {m: figures(r["y"], v["pred"], labels) | {"fallback_clips": v["fallback"]}
                               for m, v in r["modes"].items()}
        cross["corpora"][h]["trained_on"] = h in trainable
        robustness["corpora"][h] = {"clean": cross["corpora"][h][SELECT_MODE]["ua"]} | {
            c: figures(r["y"], v["pred"], labels)["ua"] for c, v in r["conditions"].items()}
    for m in MODES:
        cross["mean"][m] = {"ua": float(np.mean([cross["corpora"][h][m]["ua"] for h in cross["corpora"]])),
                            "accuracy": float(np.mean([cross["corpora"][h][m]["accuracy"] for h in cross["corpora"]]))}
    if outer and cfg.robustness:
        for c in ("clean",) + augment.TEST_CONDITIONS:
            robustness["mean"][c] = float(np.mean([robustness["corpora"][h][c] for h in robustness["corpora"]]))
    within = {}
    for corpus in within_protocols:
        rs = sorted((r for r in results if r.get("corpus") == corpus), key=lambda r: r["fold"])
        y = np.concatenate([r["y"] for r in rs])
        p = np.concatenate([r["pred"] for r in rs])
        within[corpus] = figures(y, p, labels) | {
            "fold_ua": {str(r["fold"]): unweighted_accuracy(r["y"], r["pred"]) for r in rs},
            "selected_params": {str(r["fold"]): r["params"] for r in rs},
            "mode": SELECT_MODE}
    timing["total_s"] = time.perf_counter() - t_start
    clean_speakers = pool.by_condition['clean'].clip_speaker
    counts = {c: {"clips": int(np.sum(pool.clip_corpus == c)),
                  "speakers": len({s for s, cc in zip(clean_speakers, pool.clip_corpus, strict=True) if cc == c})}
              for c in present}
    return {
        "settings": {"recipe": cfg.recipe, "description": get_xrecipe(cfg.recipe).description,
                     "grid": [dict(g) for g in get_xrecipe(cfg.recipe).grid], "label_set": ls.name,
                     "labels": labels, "merge": dict(ls.merge), "augment": cfg.augment,
                     "eval_only": [c for c in cfg.eval_only if c in present], "trainable": list(trainable),
                     "modes": list(MODES), "select_mode": SELECT_MODE, "conditions": list(conditions),
                     "fixed_params": cfg.params, "train_norm": cfg.train_norm, "jobs": cfg.jobs,
                     "cpu_count": os.cpu_count()},
        "counts": counts,
        "cross_corpus": cross,
        "selected_params": {r["held_out"]: r["params"] for r in outer},
        "inner_selection": {r["held_out"]: r["inner"] for r in outer},
        "robustness": robustness,
        "within": within,
        "cpu_s": {r["held_out"]: r["cpu_s"] for r in outer},
        "timing": timing,
    }


def order_seed_of(speaker: str) -> int:
    """The seed of ``speaker``'s clip order in ``per_speaker`` mode (same as the within-corpus evaluation)."""
    return speaker_order_seed(speaker)
