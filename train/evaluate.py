"""Speaker-independent evaluation on the standard folds, both normalisation modes, and the seed.

For every outer fold the model is selected and fitted on the training speakers only and
scored on the held-out speakers; nothing is ever scored on a speaker it was trained on.

* **Selection**: each recipe's small grid is searched by ``GroupKFold`` over the training
  speakers of the outer fold (``Recipe.inner_folds`` groups of speakers), scoring utterance-level UA
  on the inner held-out speakers, with the same normalisation mode as the outer run.
* **Normalisation** ``none``: the features as they are. ``online_speaker``: in training,
  each speaker's voiced windows are z-normalised with that speaker's own statistics
  (``normalize.speaker_stats``); the prior is the mean over training speakers of their
  means and of their variances. A test speaker is simulated exactly as the runtime runs:
  one ``OnlineNormalizer`` per speaker, that speaker's clips in a seeded random order, the
  windows of a clip in time order, ``update`` then ``transform`` for every voiced window.
  A non-voiced window is transformed with the current statistics but never updates them
  (the runtime does not feed silence to the normaliser).
* **Window level**: figures over the held-out speakers' voiced windows (the windows the
  runtime classifies).
* **Utterance level**: a clip's probabilities are the mean over its voiced windows,
  argmax. A clip without any voiced window is counted (``fallback_clips``) and scored by
  the mean over *all* its windows, so every clip gets a prediction and the figures stay
  comparable with the seed's, which classifies every clip.
* Figures "over all folds" pool the held-out predictions of every fold (each clip is
  held out exactly once); the per-fold UA list is reported beside them.
* **Seed baseline**: the 180-feature clip vector with the seed's MLPClassifier, no scaler,
  on the same folds, clip level only; fitted with ``SEED_RANDOM_STATES`` (its UA varies by
  several points with the initialisation): full figures for the first state, UA mean +- std over all.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GroupKFold
from sklearn.neural_network import MLPClassifier

from realtime_ser.normalize import NormalizerParams, OnlineNormalizer, speaker_stats

from .data import PROTOCOL_CORPORA, corpus_labels, limit_speakers, load_folds, load_manifest
from .dataset import DEFAULT_CACHE_DIR, Framing, WindowTable, limit_blas_threads, load_seed_features, load_windows
from .metrics import classification_figures, unweighted_accuracy
from .recipes import check_norm_mode, get_recipe

log = logging.getLogger(__name__)

PRIOR_WEIGHT = 10.0  # the prior counts as this many windows (5 s of speech at a 0.5 s hop)
MAX_COUNT = 1000.0  # then an exponential moving average over ~8 minutes of voiced windows
ORDER_SEED = 1234  # seed of the random clip order of each simulated test speaker
# The seed MLP (adam, no scaler) moves by several UA points with its random initialisation: it is
# fitted with each of these states; figures and confusion are for the first, UA also as mean +- std.
SEED_RANDOM_STATES = (0, 1, 2)
SEED_MLP_PARAMS = dict(alpha=0.1, batch_size=30, hidden_layer_sizes=(300,), learning_rate="adaptive", max_iter=500)
TASK_COST_RANK = {"svc": 0, "mlp": 1, "seed": 2, "logreg": 3}  # order of the fold tasks, slowest first
PROTOCOL_NAMES = {
    "ravdess": "RAVDESS speech, 8 classes, 6 speaker-independent folds of 4 actors "
               "(protocols/ravdess_speaker_folds.csv, EmoBox folds)",
    "emodb": "EmoDB, 7 classes, leave-one-speaker-out over 10 speakers (protocols/emodb_speaker_folds.csv)",
}


# ---------------------------------------------------------------- data in array form


@dataclass
class CorpusData:
    """Arrays a fold needs. Speakers are unique across the merged corpora."""

    name: str
    labels: list[str]
    X: np.ndarray  # (n, F) every window
    speech: np.ndarray  # (n,) bool
    clip_index: np.ndarray  # (n,) int, windows of a clip are contiguous and in time order
    clip_speaker: np.ndarray  # (n_clips,) str
    clip_y: np.ndarray  # (n_clips,) int index into labels
    clip_ids: list[str]

    @property
    def n_clips(self) -> int:
        return len(self.clip_y)

    @classmethod
    def from_tables(cls, name: str, tables: list[WindowTable], labels: list[str]) -> CorpusData:
        prefix = len(tables) > 1
        X, speech, clip_index, spk, y, ids = [], [], [], [], [], []
        offset = 0
        for t in tables:
            X.append(t.X)
            speech.append(t.speech)
            clip_index.append(t.clip_index + offset)
            offset += len(t.clips)
            for c in t.clips:
                spk.append(f"{t.corpus}/{c.speaker}" if prefix else c.speaker)
                y.append(labels.index(c.label))
                ids.append(f"{t.corpus}/{c.clip_id}")
        return cls(name=name, labels=list(labels), X=np.concatenate(X), speech=np.concatenate(speech),
                   clip_index=np.concatenate(clip_index), clip_speaker=np.array(spk),
                   clip_y=np.array(y, dtype=np.int64), clip_ids=ids)

    def window_speakers(self) -> np.ndarray:
        return self.clip_speaker[self.clip_index]

    def window_y(self) -> np.ndarray:
        return self.clip_y[self.clip_index]


# ---------------------------------------------------------------- normalisation


def normalizer_prior(X: np.ndarray, groups: np.ndarray) -> NormalizerParams:
    """Prior of the online normaliser: mean over speakers of per-speaker means and of per-speaker variances."""
    stats = [speaker_stats(X[groups == g]) for g in np.unique(groups)]
    return NormalizerParams(prior_mean=np.mean([m for m, _ in stats], axis=0),
                            prior_var=np.mean([v for _, v in stats], axis=0),
                            prior_weight=PRIOR_WEIGHT, max_count=MAX_COUNT)


def per_speaker_normalise(X: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Training-time normalisation: every speaker's rows by that speaker's own mean and variance."""
    out = np.empty(X.shape, dtype=np.float32)
    for g in np.unique(groups):
        sel = groups == g
        mean, var = speaker_stats(X[sel])
        out[sel] = ((X[sel] - mean) / np.sqrt(var)).astype(np.float32)
    return out


def speaker_order_seed(speaker: str) -> int:
    return ORDER_SEED + zlib.crc32(speaker.encode())


def simulate_online(data: CorpusData, rows: np.ndarray, params: NormalizerParams) -> np.ndarray:
    """Runtime normalisation of ``rows`` (window indices): per speaker, clips in seeded random order,
    windows in time order, ``update`` then ``transform`` on each voiced window. Returns (len(rows), F)."""
    rows = np.asarray(rows)
    out = np.empty((len(rows), data.X.shape[1]), dtype=np.float32)
    pos = {int(r): i for i, r in enumerate(rows)}
    clips = np.unique(data.clip_index[rows])
    for spk in np.unique(data.clip_speaker[clips]):
        spk_clips = clips[data.clip_speaker[clips] == spk]
        order = np.random.default_rng(speaker_order_seed(str(spk))).permutation(spk_clips)
        norm = OnlineNormalizer(params)
        for c in order:
            for r in np.flatnonzero(data.clip_index == c):  # ascending = time order
                if int(r) not in pos:
                    continue
                if data.speech[r]:
                    norm.update(data.X[r])
                out[pos[int(r)]] = norm.transform(data.X[r])
    return out


# ---------------------------------------------------------------- fit and predict


def fit_model(recipe_name: str, params: dict, mode: str, data: CorpusData, train_clips: np.ndarray):
    """Fit on the voiced windows of ``train_clips``; returns (pipeline, prior or None)."""
    recipe = get_recipe(recipe_name)
    rows = np.flatnonzero(np.isin(data.clip_index, train_clips) & data.speech)
    X, groups, y = data.X[rows], data.window_speakers()[rows], data.window_y()[rows]
    prior = None
    if mode == "online_speaker":
        prior = normalizer_prior(X, groups)
        X = per_speaker_normalise(X, groups)
    model = recipe.build(**params)
    model.fit(X, y)
    return model, prior


def predict_windows(model, prior: NormalizerParams | None, data: CorpusData, rows: np.ndarray) -> np.ndarray:
    """(len(rows), n_labels) probabilities of the windows ``rows`` (normalised as the runtime would)."""
    X = data.X[rows] if prior is None else simulate_online(data, rows, prior)
    proba = model.predict_proba(X)
    out = np.zeros((len(rows), len(data.labels)))
    out[:, model.classes_.astype(int)] = proba
    return out


def utterance_proba(P: np.ndarray, speech: np.ndarray, clip_of_row: np.ndarray, clips: np.ndarray):
    """Per clip in ``clips``: mean of its voiced windows' probabilities (all windows if none is voiced).
    Returns (probs (len(clips), K), fallback mask)."""
    out = np.zeros((len(clips), P.shape[1]))
    fallback = np.zeros(len(clips), dtype=bool)
    for i, c in enumerate(clips):
        sel = clip_of_row == c
        voiced = sel & speech
        if voiced.any():
            out[i] = P[voiced].mean(axis=0)
        else:
            fallback[i] = True
            out[i] = P[sel].mean(axis=0)
    return out, fallback


def _score_split(recipe_name, params, mode, data, train_clips, test_clips) -> float:
    model, prior = fit_model(recipe_name, params, mode, data, train_clips)
    rows = np.flatnonzero(np.isin(data.clip_index, test_clips))
    P = predict_windows(model, prior, data, rows)
    U, _ = utterance_proba(P, data.speech[rows], data.clip_index[rows], test_clips)
    return unweighted_accuracy(data.clip_y[test_clips], U.argmax(axis=1))


def select_params(recipe_name: str, mode: str, data: CorpusData, train_clips: np.ndarray) -> tuple[dict, list]:
    """Pick the recipe's grid entry by speaker-grouped CV within ``train_clips`` (utterance UA)."""
    recipe = get_recipe(recipe_name)
    grid = recipe.grid
    speakers = data.clip_speaker[train_clips]
    n_groups = len(np.unique(speakers))
    if len(grid) == 1 or n_groups < 2:
        return dict(grid[0]), []
    cv = GroupKFold(n_splits=min(recipe.inner_folds, n_groups))
    scores = []
    for params in grid:
        s = [_score_split(recipe_name, params, mode, data, train_clips[tr], train_clips[va])
             for tr, va in cv.split(train_clips, groups=speakers)]
        scores.append(float(np.mean(s)))
    best = int(np.argmax(scores))
    return dict(grid[best]), [{"params": dict(p), "inner_ua": s} for p, s in zip(grid, scores, strict=True)]


# ---------------------------------------------------------------- fold tasks (run in worker processes)

_DATA: dict[str, CorpusData] = {}
_SEED: dict[str, np.ndarray] = {}


def _init_worker(data: dict, seed: dict) -> None:
    limit_blas_threads()  # one BLAS thread per worker process: --jobs sets the parallelism
    _DATA.update(data)
    _SEED.update(seed)


def _fold_clips(data: CorpusData, test_speakers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    is_test = np.isin(data.clip_speaker, test_speakers)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def run_fold(corpus: str, recipe_name: str, mode: str, fold: int, test_speakers: list[str]) -> dict:
    """Select, fit on the other speakers, predict the held-out ones."""
    data = _DATA[corpus]
    t0 = time.perf_counter()
    train_clips, test_clips = _fold_clips(data, test_speakers)
    assert not set(data.clip_speaker[train_clips]) & set(data.clip_speaker[test_clips])
    params, inner = select_params(recipe_name, mode, data, train_clips)
    t1 = time.perf_counter()
    model, prior = fit_model(recipe_name, params, mode, data, train_clips)
    t2 = time.perf_counter()
    rows = np.flatnonzero(np.isin(data.clip_index, test_clips))
    P = predict_windows(model, prior, data, rows)
    U, fallback = utterance_proba(P, data.speech[rows], data.clip_index[rows], test_clips)
    return {"corpus": corpus, "key": f"{recipe_name}/{mode}", "fold": fold, "params": params, "inner": inner,
            "rows": rows, "P": P, "clips": test_clips, "U": U, "fallback": fallback,
            "select_s": t1 - t0, "fit_s": t2 - t1, "predict_s": time.perf_counter() - t2}


def run_seed_fold(corpus: str, fold: int, test_speakers: list[str]) -> dict:
    data = _DATA[corpus]
    Xs = _SEED[corpus]
    t0 = time.perf_counter()
    train_clips, test_clips = _fold_clips(data, test_speakers)
    preds, converged = [], []
    for state in SEED_RANDOM_STATES:
        clf = MLPClassifier(random_state=state, **SEED_MLP_PARAMS)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            clf.fit(Xs[train_clips], data.clip_y[train_clips])
        converged.append(not any(issubclass(w.category, ConvergenceWarning) for w in caught))
        preds.append(clf.predict(Xs[test_clips]))
    return {"corpus": corpus, "key": "seed", "fold": fold, "clips": test_clips, "preds": preds,
            "converged": all(converged), "fit_s": time.perf_counter() - t0}


def _call(task: tuple) -> dict:
    fn, args = task
    return fn(*args)


# ---------------------------------------------------------------- the whole evaluation


@dataclass(frozen=True)
class EvalConfig:
    data_root: Path
    recipes: tuple[str, ...]
    modes: tuple[str, ...]
    corpora: tuple[str, ...] = PROTOCOL_CORPORA
    speakers: int | None = None  # at most this many speakers per corpus (quick runs)
    folds: int | None = None  # evaluate only the first this many folds
    jobs: int = 2
    cache_dir: Path | None = DEFAULT_CACHE_DIR
    seed_baseline: bool = True
    framing: Framing = Framing()


def _figures(y_true, y_pred, labels) -> dict:
    return classification_figures([labels[i] for i in y_true], [labels[i] for i in y_pred], labels)


def evaluate(cfg: EvalConfig) -> dict:
    """Run the evaluation; returns the report dict (see ``train.report``)."""
    for r in cfg.recipes:
        get_recipe(r)
    for m in cfg.modes:
        check_norm_mode(m)
    timing: dict[str, float] = {}
    t_start = time.perf_counter()
    datas, seeds = {}, {}
    protocols: dict[str, dict[str, Any]] = {}
    for corpus in cfg.corpora:
        clips = load_manifest(cfg.data_root, corpus)
        folds = limit_speakers(load_folds(cfg.data_root, corpus), cfg.speakers)
        unknown = {c.speaker for c in clips} - set(load_folds(cfg.data_root, corpus))
        if unknown:
            log.warning("%s: speakers %s are in no fold and are not evaluated", corpus, sorted(unknown))
        clips = [c for c in clips if c.speaker in folds]
        labels = corpus_labels(clips)
        t0 = time.perf_counter()
        table = load_windows(corpus, clips, framing=cfg.framing, cache_dir=cfg.cache_dir, jobs=cfg.jobs)
        timing[f"features_{corpus}_s"] = time.perf_counter() - t0
        if cfg.seed_baseline:
            t0 = time.perf_counter()
            seeds[corpus] = load_seed_features(corpus, clips, cache_dir=cfg.cache_dir, jobs=cfg.jobs)
            timing[f"seed_features_{corpus}_s"] = time.perf_counter() - t0
        datas[corpus] = CorpusData.from_tables(corpus, [table], labels)
        fold_ids = sorted(set(folds.values()))
        if cfg.folds is not None:
            fold_ids = fold_ids[: cfg.folds]
        protocols[corpus] = {
            "protocol": PROTOCOL_NAMES[corpus], "labels": labels, "counts": table.counts(),
            "folds": {str(f): sorted(s for s, ff in folds.items() if ff == f) for f in fold_ids},
            "complete": cfg.speakers is None and cfg.folds is None,
        }

    tasks: list[tuple[Callable[..., dict], tuple]] = []
    for corpus, proto in protocols.items():
        for recipe in cfg.recipes:
            for mode in cfg.modes:
                for f, spk in proto["folds"].items():
                    tasks.append((run_fold, (corpus, recipe, mode, int(f), spk)))
        if cfg.seed_baseline:
            for f, spk in proto["folds"].items():
                tasks.append((run_seed_fold, (corpus, int(f), spk)))
    # Longest tasks first, so that the last ones to finish are short (better use of the workers).
    tasks.sort(key=lambda t: (TASK_COST_RANK.get(t[1][1] if t[0] is run_fold else "seed", len(TASK_COST_RANK)),
                              t[1][0] != "ravdess"))
    log.info("evaluating %d fold tasks on %d process(es)", len(tasks), cfg.jobs)
    t0 = time.perf_counter()
    results = []

    def done(r: dict) -> None:
        results.append(r)
        log.info("fold task %d/%d done: %s %s fold %d (%.0f s elapsed)", len(results), len(tasks), r["corpus"],
                 r["key"], r["fold"], time.perf_counter() - t0)

    if cfg.jobs > 1:
        with ProcessPoolExecutor(max_workers=cfg.jobs, initializer=_init_worker, initargs=(datas, seeds)) as ex:
            for fut in as_completed([ex.submit(_call, t) for t in tasks]):
                done(fut.result())
    else:
        _init_worker(datas, seeds)
        for t in tasks:
            done(_call(t))
    timing["folds_wall_s"] = time.perf_counter() - t0

    for corpus, proto in protocols.items():
        data = datas[corpus]
        labels = data.labels
        proto["results"] = {}
        for recipe in cfg.recipes:
            for mode in cfg.modes:
                key = f"{recipe}/{mode}"
                rs = sorted((r for r in results if r["corpus"] == corpus and r["key"] == key), key=lambda r: r["fold"])
                rows = np.concatenate([r["rows"] for r in rs])
                P = np.concatenate([r["P"] for r in rs])
                voiced = data.speech[rows]
                scored = np.concatenate([r["clips"] for r in rs])
                U = np.concatenate([r["U"] for r in rs])
                wy = data.clip_y[data.clip_index[rows]]
                proto["results"][key] = {
                    "recipe": recipe, "norm": mode, "description": get_recipe(recipe).description,
                    "utterance": _figures(data.clip_y[scored], U.argmax(axis=1), labels),
                    "window": _figures(wy[voiced], P[voiced].argmax(axis=1), labels),
                    "utterance_fold_ua": {str(r["fold"]): unweighted_accuracy(data.clip_y[r["clips"]],
                                                                              r["U"].argmax(axis=1))
                                          for r in rs},
                    "fallback_clips": int(sum(r["fallback"].sum() for r in rs)),
                    "selected_params": {str(r["fold"]): r["params"] for r in rs},
                    "inner_cv": {str(r["fold"]): r["inner"] for r in rs},
                    "cpu_s": {"select": float(sum(r["select_s"] for r in rs)),
                              "fit": float(sum(r["fit_s"] for r in rs)),
                              "predict": float(sum(r["predict_s"] for r in rs))},
                }
        if cfg.seed_baseline:
            rs = sorted((r for r in results if r["corpus"] == corpus and r["key"] == "seed"), key=lambda r: r["fold"])
            scored = np.concatenate([r["clips"] for r in rs])
            preds = [np.concatenate([r["preds"][k] for r in rs]) for k in range(len(SEED_RANDOM_STATES))]
            pred = preds[0]
            ua_by_state = [unweighted_accuracy(data.clip_y[scored], p) for p in preds]
            proto["seed_baseline"] = {
                "description": "seed: means of librosa 40 MFCC + 12 chroma_stft + 128 mel over the whole clip (180), "
                               "MLPClassifier(alpha=0.1, batch_size=30, hidden_layer_sizes=(300,), "
                               "learning_rate='adaptive', max_iter=500), no scaler",
                "utterance": _figures(data.clip_y[scored], pred, labels),
                "utterance_fold_ua": {str(r["fold"]): unweighted_accuracy(data.clip_y[r["clips"]], r["preds"][0])
                                      for r in rs},
                "random_states": list(SEED_RANDOM_STATES),
                "utterance_ua_by_random_state": ua_by_state,
                "utterance_ua_mean": float(np.mean(ua_by_state)),
                "utterance_ua_std": float(np.std(ua_by_state)),
                "cpu_s": {"fit": float(sum(r["fit_s"] for r in rs))},
                "folds_not_converged": [r["fold"] for r in rs if not r["converged"]],
            }
    timing["total_s"] = time.perf_counter() - t_start
    return {"protocols": protocols, "timing": timing,
            "settings": {"recipes": list(cfg.recipes), "modes": list(cfg.modes), "jobs": cfg.jobs,
                         "speakers_limit": cfg.speakers, "folds_limit": cfg.folds,
                         "inner_folds": {r: get_recipe(r).inner_folds for r in cfg.recipes},
                         "normalizer": {"prior_weight": PRIOR_WEIGHT, "max_count": MAX_COUNT, "order_seed": ORDER_SEED},
                         "cpu_count": os.cpu_count()}}
