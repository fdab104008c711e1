"""Speaker profiles measured: ``python -m train.profile_eval`` -> reports/profiles.md + reports/profiles.json.

The question (issue 10): on held-out speakers of the cross-corpus protocol (leave one corpus
out of the six in the data root; the 4 shared classes angry, happy, neutral (+calm), sad),
what is the utterance UA of a speaker's *first 2 minutes* of clips

* without a profile (the online normaliser starts from the training population prior),
* after all of the speaker's clips (today's normaliser, warmed on every clip of the speaker first),
* with a profile made from 45-60 s of the same speaker's neutral clips (not among the scored ones):
  ``raw`` (neutral statistics as they are), ``mapped`` (neutral statistics mapped to
  all-emotion statistics with a population mapping learnt on the training corpora) and
  ``neutral_ref`` (a model trained with neutral-referenced speaker normalisation, applied with the
  profile's neutral statistics, fixed),
* with 5-10 s of labelled speech per emotion on top of the raw profile: a per-speaker class-bias
  correction, shrunk by a factor chosen on the other corpora's held-out speakers, never on the
  scored speaker's corpus.

Interface (the lead hooks it into ``python -m train``)::

    from train.profile_eval import ClipSet, evaluate_profiles, write_reports
    result = evaluate_profiles(clips, fit=fit_fn)   # clips: ClipSet; fit_fn(X, y) -> predict_proba-able
    write_reports(result, out_dir)

``ClipSet`` holds per-clip voiced-window feature matrices, speakers, labels (indices into
``LABELS``), corpora and durations. ``fit(X, y)`` gets per-speaker-normalised voiced windows
and class indices and returns an object with ``predict_proba(X) -> (n, 4)``.
Features are extracted once into ``--cache`` (default /work/wt/cache-profiles), outside the repo.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realtime_ser import features, gate, vad
from realtime_ser.audio.windowing import windows_of
from realtime_ser.normalize import NormalizerParams, OnlineNormalizer, speaker_stats

log = logging.getLogger(__name__)

CORPORA6 = ("ravdess", "emodb", "nemo", "ased", "spanish", "turev")
LABELS = ("angry", "happy", "neutral", "sad")
LABEL_MAP = {"angry": 0, "happy": 1, "neutral": 2, "calm": 2, "sad": 3}
WINDOW, HOP = 32000, 8000  # the shipped model's 2.0 s window, 0.5 s hop at 16 kHz
DEFAULT_CACHE = Path("/work/wt/cache-profiles")
CACHE_VERSION = 2  # 2: windows gated by the neural speech gate (gate.SpeechGate), not vad.decide


# ---------------------------------------------------------------- extraction (once, cached)


def _clip_task(args: tuple) -> np.ndarray:
    path, = args
    import soundfile as sf

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != features.SAMPLE_RATE:
        raise ValueError(f"{path}: {sr} Hz")
    frames = features.FrameCache()
    speech_gate = gate.SpeechGate(vad.VadParams())  # the runtime's gate, window after window like a stream
    rows = []
    for w in windows_of(x, WINDOW, HOP):
        a = frames.analyze(w.samples, w.end - len(w.samples))
        if speech_gate.decide(w, a).speech:
            rows.append(features.functionals(a))
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), features.N_FEATURES)


def _init() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def extract(root: Path, cache: Path, jobs: int = 2) -> dict:
    """Per corpus: voiced windows of every 4-class clip, cached in ``cache``."""
    import csv

    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for corpus in CORPORA6:
        path = cache / f"{corpus}-{features.SPEC_HASH}-{gate.model_sha256()[:12]}-v{CACHE_VERSION}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                out[corpus] = {k: z[k] for k in z.files}
            continue
        with open(root / corpus / "MANIFEST.csv", newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["emotion"] in LABEL_MAP]
        t0 = time.perf_counter()
        args = [(root / corpus / r["path"],) for r in rows]
        if jobs > 1:
            with ProcessPoolExecutor(max_workers=jobs, initializer=_init) as ex:
                mats = list(ex.map(_clip_task, args, chunksize=16))
        else:
            mats = [_clip_task(a) for a in args]
        lens = np.array([len(m) for m in mats])
        arrays = {"X": np.concatenate(mats).reshape(-1, features.N_FEATURES),
                  "offsets": np.concatenate([[0], np.cumsum(lens)]),
                  "speaker": np.array([f"{corpus}/{r['speaker']}" for r in rows]),
                  "label": np.array([LABEL_MAP[r["emotion"]] for r in rows]),
                  "emotion": np.array([r["emotion"] for r in rows]),
                  "duration": np.array([float(r["duration_s"]) for r in rows])}
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, allow_pickle=False, **arrays)
        os.replace(tmp, path)
        log.warning("%s: %d clips in %.0f s", corpus, len(rows), time.perf_counter() - t0)
        out[corpus] = arrays
    return out


# ---------------------------------------------------------------- the measurement

PRIOR_WEIGHT = 10.0  # as train.evaluate (today's normaliser)
MAX_COUNT = 1000.0
ORDER_SEED = 1234
SCORED_S = 120.0  # a speaker's first 2 minutes
PROFILE_MIN_S, PROFILE_MAX_S = 45.0, 60.0
EXAMPLE_MIN_S, EXAMPLE_MAX_S = 5.0, 10.0
SHRINK_GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
BIAS_L2_GRID = (1.0, 10.0)  # L2 penalty of the bias fit (per example, scaled by the count)
CONDITIONS = ("none", "after_all", "raw", "mapped", "neutral_ref", "raw+examples")


@dataclass
class ClipSet:
    """Clips as per-clip matrices of voiced-window features (clips with no voiced window dropped)."""

    X: list  # list of (n_i, F) float32
    speaker: np.ndarray
    label: np.ndarray  # index into LABELS
    corpus: np.ndarray
    duration: np.ndarray

    @classmethod
    def from_cache(cls, data: dict) -> ClipSet:
        X, spk, lab, cor, dur = [], [], [], [], []
        for corpus, a in data.items():
            off = a["offsets"]
            for i in range(len(a["label"])):
                if off[i + 1] > off[i]:
                    X.append(a["X"][off[i]:off[i + 1]])
                    spk.append(a["speaker"][i])
                    lab.append(a["label"][i])
                    cor.append(corpus)
                    dur.append(a["duration"][i])
        return cls(X, np.array(spk), np.array(lab), np.array(cor), np.array(dur))


def default_fit(X: np.ndarray, y: np.ndarray):
    """Today's shipped recipe: StandardScaler + balanced LogisticRegression, C=0.01."""
    from .recipes import get_recipe

    return get_recipe("logreg_bal").build(C=0.01).fit(X, y)


def neutral_map(pairs: list) -> dict:
    """Population mapping neutral -> all-emotion statistics from ``[(mean_neu, var_neu, mean_all, var_all)]``:
    ``mean_all = mean_neu + shift * sd_neu``, ``var_all = var_neu * scale`` (averages over speakers)."""
    shift = np.mean([(ma - mn) / np.sqrt(vn) for mn, vn, ma, va in pairs], axis=0)
    log_scale = np.mean([np.log(va / vn) for mn, vn, ma, va in pairs], axis=0)
    return {"shift": shift, "scale": np.exp(log_scale)}


def apply_map(mean: np.ndarray, var: np.ndarray, m: dict) -> tuple[np.ndarray, np.ndarray]:
    return mean + m["shift"] * np.sqrt(var), var * m["scale"]


def seeded_normalizer(params: NormalizerParams, mean: np.ndarray, var: np.ndarray, n: int) -> OnlineNormalizer:
    """A normaliser whose state is ``n`` windows of a speaker with these statistics (a loaded profile)."""
    norm = OnlineNormalizer(params)
    for _ in range(n):  # the count and prior share exactly as after n updates
        norm.count = min(norm.count + 1.0, params.max_count)
        norm.prior_share *= 1.0 - 1.0 / norm.count
    norm.mean, norm.sq = mean.astype(np.float64).copy(), (var + mean**2).astype(np.float64)
    norm.n_updates = n
    return norm


def run_online(model, norm: OnlineNormalizer | None, clips: list, fixed: tuple | None = None) -> np.ndarray:
    """Utterance probabilities (mean over voiced windows) of ``clips`` in order, updating ``norm``."""
    out = []
    for X in clips:
        if fixed is not None:
            Z = ((X - fixed[0]) / np.sqrt(fixed[1])).astype(np.float32)
        else:
            assert norm is not None, "no fixed statistics: the online normaliser is needed"
            Z = np.empty(X.shape, dtype=np.float32)
            for j, x in enumerate(X):
                norm.update(x)
                Z[j] = norm.transform(x)
        out.append(model.predict_proba(Z).mean(axis=0))
    return np.array(out)


def fit_bias(P: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 300, lr: float = 0.5) -> np.ndarray:
    """Class-bias correction ``b`` (added to log-probabilities) maximising the examples' likelihood, L2 penalty."""
    L = np.log(np.maximum(P, 1e-9))
    b = np.zeros(P.shape[1])
    Y = np.eye(P.shape[1])[y]
    for _ in range(iters):
        z = L + b
        q = np.exp(z - z.max(axis=1, keepdims=True))
        q /= q.sum(axis=1, keepdims=True)
        grad = (q - Y).mean(axis=0) + l2 * b / max(len(y), 1)
        b -= lr * grad
    return b - b.mean()


def _ua(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def _take(order, dur, ok, lo, hi) -> list:
    got: list = []
    total = 0.0
    for c in order:
        if not ok(c):
            continue
        if total >= lo:
            break
        if total + dur[c] > hi and got:
            continue
        got.append(c)
        total += dur[c]
    return got if total >= lo else []


def _fold(cs: ClipSet, test_corpus: str, fit, profile_min_s: float) -> list:
    """Per eligible held-out speaker of ``test_corpus``: labels and utterance probabilities per condition."""
    is_test = cs.corpus == test_corpus
    train = np.flatnonzero(~is_test)
    Xs_all, Xs_neu, ys_all, ys_neu, pairs, stats = [], [], [], [], [], []
    for spk in np.unique(cs.speaker[train]):
        idx = train[cs.speaker[train] == spk]
        X = np.concatenate([cs.X[i] for i in idx])
        y = np.concatenate([np.full(len(cs.X[i]), cs.label[i]) for i in idx])
        m, v = speaker_stats(X)
        stats.append((m, v))
        Xs_all.append(((X - m) / np.sqrt(v)).astype(np.float32))
        ys_all.append(y)
        neu = y == LABELS.index("neutral")
        if neu.sum() >= 10:
            mn, vn = speaker_stats(X[neu])
            pairs.append((mn, vn, m, v))
            Xs_neu.append(((X - mn) / np.sqrt(vn)).astype(np.float32))
            ys_neu.append(y)
    params = NormalizerParams(prior_mean=np.mean([m for m, _ in stats], axis=0),
                              prior_var=np.mean([v for _, v in stats], axis=0),
                              prior_weight=PRIOR_WEIGHT, max_count=MAX_COUNT)
    model = fit(np.concatenate(Xs_all), np.concatenate(ys_all))
    model_neu = fit(np.concatenate(Xs_neu), np.concatenate(ys_neu))
    nmap = neutral_map(pairs)
    out = []
    test = np.flatnonzero(is_test)
    for spk in np.unique(cs.speaker[test]):
        idx = test[cs.speaker[test] == spk]
        order = np.random.default_rng(ORDER_SEED + zlib.crc32(str(spk).encode())).permutation(idx)
        neutral = LABELS.index("neutral")
        prof = _take(order, cs.duration, lambda c, neutral=neutral: cs.label[c] == neutral, profile_min_s,
                     PROFILE_MAX_S)
        if not prof:
            out.append({"speaker": str(spk), "eligible": False, "why": "too little neutral speech"})
            continue
        used = set(prof)
        examples = []
        for k in range(len(LABELS)):
            ex = _take(order, cs.duration, lambda c, k=k, used=used: cs.label[c] == k and c not in used,
                       EXAMPLE_MIN_S, EXAMPLE_MAX_S)
            if not ex and k == neutral:  # the profile's own neutral clips are labelled, unscored speech
                ex = _take(order, cs.duration, lambda c, prof=prof: c in set(prof), EXAMPLE_MIN_S, EXAMPLE_MAX_S)
            examples += ex
            used |= set(ex)
        scored, total = [], 0.0
        for c in order:
            if c in used or total + cs.duration[c] > SCORED_S:
                continue
            scored.append(c)
            total += cs.duration[c]
        y = cs.label[scored]
        if len(np.unique(y)) < 2:
            out.append({"speaker": str(spk), "eligible": False, "why": "fewer than 2 classes left to score"})
            continue
        S = [cs.X[c] for c in scored]
        PX = np.concatenate([cs.X[c] for c in prof])
        P = {"none": run_online(model, OnlineNormalizer(params), S)}
        warm = OnlineNormalizer(params)
        run_online(model, warm, [cs.X[c] for c in order])
        P["after_all"] = run_online(model, warm, S)
        raw = OnlineNormalizer(params)
        for x in PX:
            raw.update(x)
        P["raw"] = run_online(model, raw, S)
        mn, vn = speaker_stats(PX)
        mm, vm = apply_map(mn, vn, nmap)
        mapped = seeded_normalizer(params, mm, vm, len(PX))
        P["mapped"] = run_online(model, mapped, S)
        P["neutral_ref"] = run_online(model_neu, None, S, fixed=(mn, vn))
        ex_norm = OnlineNormalizer(params)  # the raw profile, then the examples as listen would see them
        for x in PX:
            ex_norm.update(x)
        Pe = run_online(model, ex_norm, [cs.X[c] for c in examples])
        bias = {l2: fit_bias(Pe, cs.label[examples], l2=l2) for l2 in BIAS_L2_GRID}
        out.append({"speaker": str(spk), "eligible": True, "corpus": test_corpus, "y": y, "P": P, "bias": bias,
                    "profile_s": float(cs.duration[prof].sum()), "profile_windows": len(PX),
                    "examples_s": float(cs.duration[examples].sum()) if examples else 0.0,
                    "scored_clips": len(scored), "scored_s": float(total), "n_clips": len(idx)})
    return out


def _fold_task(args):
    cs, corpus, fit, profile_min_s = args
    _init()
    return corpus, _fold(cs, corpus, fit, profile_min_s)


def _pred(P: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    L = np.log(np.maximum(P, 1e-9))
    return (L if bias is None else L + bias).argmax(axis=1)


def _summary(rows: list) -> dict:
    out = {}
    for cond in CONDITIONS:
        ua = np.array([r["ua"][cond] for r in rows])
        base = np.array([r["ua"]["none"] for r in rows])
        yall = np.concatenate([r["y"] for r in rows])
        pall = np.concatenate([r["pred"][cond] for r in rows])
        worst = int(np.argmin(ua - base))
        out[cond] = {"mean_ua": float(ua.mean()), "worst_ua": float(ua.min()), "pooled_ua": _ua(yall, pall),
                     "mean_delta_vs_none": float((ua - base).mean()),
                     "worst_delta_vs_none": float((ua - base)[worst]), "worst_delta_speaker": rows[worst]["speaker"],
                     "speakers_worse_than_none": int(np.sum(ua < base - 1e-12))}
    d = np.array([r["ua"]["raw+examples"] - r["ua"]["raw"] for r in rows])
    out["raw+examples"]["mean_delta_vs_raw"] = float(d.mean())
    out["raw+examples"]["worst_delta_vs_raw"] = float(d.min())
    out["raw+examples"]["speakers_worse_than_raw"] = int(np.sum(d < -1e-12))
    return out


def evaluate_profiles(cs: ClipSet, fit=default_fit, corpora=CORPORA6, jobs: int = 2,
                      profile_min_s: float = PROFILE_MIN_S) -> dict:
    """The whole measurement; returns a JSON-ready dict (see ``write_reports``)."""
    t0 = time.perf_counter()
    tasks = [(cs, c, fit, profile_min_s) for c in corpora]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as ex:
            folds = dict(ex.map(_fold_task, tasks))
    else:
        folds = dict(_fold_task(t) for t in tasks)
    rows = [r for c in corpora for r in folds[c] if r["eligible"]]
    # shrinkage of the example correction for corpus c: chosen on the other corpora's speakers only
    alpha = {}
    for c in corpora:
        sel = [r for r in rows if r["corpus"] != c]
        grid = [(a, l2) for l2 in BIAS_L2_GRID for a in SHRINK_GRID]
        # the mean gain over the selection speakers, minus its spread: prefer a correction that helps
        # most speakers to one that helps a few a lot (0 shrinkage scores exactly 0: no correction)
        def score(a, l2, sel=sel):
            d = np.array([_ua(r["y"], _pred(r["P"]["raw"], a * r["bias"][l2])) - _ua(r["y"], _pred(r["P"]["raw"]))
                          for r in sel])
            return float(d.mean() - d.std() / np.sqrt(len(d))) if len(d) else 0.0
        scores = [score(a, l2) for a, l2 in grid]
        alpha[c] = grid[int(np.argmax(scores))]
    for r in rows:
        r["pred"] = {cond: _pred(r["P"][cond]) for cond in CONDITIONS if cond != "raw+examples"}
        a, l2 = alpha[r["corpus"]]
        r["pred"]["raw+examples"] = _pred(r["P"]["raw"], a * r["bias"][l2])
        r["ua"] = {cond: _ua(r["y"], r["pred"][cond]) for cond in CONDITIONS}
    per_corpus = {}
    for c in corpora:
        rc = [r for r in rows if r["corpus"] == c]
        per_corpus[c] = {"eligible_speakers": len(rc), "speakers": len(folds[c]),
                         "shrinkage": alpha[c], "summary": _summary(rc) if rc else None}
    return {"settings": {"labels": list(LABELS), "corpora": list(corpora), "scored_s": SCORED_S,
                         "profile_s": [profile_min_s, PROFILE_MAX_S], "example_s": [EXAMPLE_MIN_S, EXAMPLE_MAX_S],
                         "prior_weight": PRIOR_WEIGHT, "max_count": MAX_COUNT, "order_seed": ORDER_SEED,
                         "shrink_grid": list(SHRINK_GRID), "bias_l2_grid": list(BIAS_L2_GRID)},
            "overall": _summary(rows), "speakers": len(rows), "per_corpus": per_corpus,
            "per_speaker": [{k: r[k] for k in ("speaker", "corpus", "profile_s", "examples_s", "scored_clips",
                                                "scored_s", "n_clips")} | {"ua": r["ua"]} for r in rows],
            "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------- report

NAMES = {"none": "no profile (cold start)", "after_all": "today's normaliser after all the speaker's clips",
         "raw": "neutral profile, raw statistics", "mapped": "neutral profile, mapped to all-emotion statistics",
         "neutral_ref": "neutral profile, neutral-referenced model (fixed)",
         "raw+examples": "raw neutral profile + personal examples (class bias, shrunk)"}


def _table(s: dict) -> list[str]:
    lines = ["| condition | mean UA | worst speaker UA | pooled UA | mean delta vs none | worst delta vs none | "
             "speakers worse |", "|---|---|---|---|---|---|---|"]
    for c in CONDITIONS:
        f = s[c]
        lines.append(f"| {NAMES[c]} | {f['mean_ua']:.3f} | {f['worst_ua']:.3f} | {f['pooled_ua']:.3f} | "
                     f"{f['mean_delta_vs_none']:+.3f} | {f['worst_delta_vs_none']:+.3f} ({f['worst_delta_speaker']}) | "
                     f"{f['speakers_worse_than_none']} |")
    e = s["raw+examples"]
    lines.append(f"\nPersonal examples vs the raw profile alone: mean {e['mean_delta_vs_raw']:+.3f}, worst "
                 f"speaker {e['worst_delta_vs_raw']:+.3f}, {e['speakers_worse_than_raw']} speaker(s) worse.")
    return lines


def write_reports(results: dict, out_dir: Path) -> Path:
    """``profiles.json`` and ``profiles.md`` in ``out_dir``; ``results``: {setting name: evaluate_profiles(...)}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "profiles.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    md = ["# Speaker profiles: measured", "",
          "Written by `python -m train.profile_eval` (see its docstring for the protocol). Held-out speakers of the",
          "cross-corpus protocol (leave one corpus out of six; model: StandardScaler + balanced logistic regression",
          "C=0.01 on per-speaker-normalised voiced windows of the five other corpora, 4 classes angry/happy/",
          "neutral(+calm)/sad). Scored: utterance UA over a speaker's first 2 minutes of clips (seeded random",
          "order), excluding the profile's neutral clips and the personal-example clips; per-speaker UA is over",
          "the classes present in those 2 minutes.", ""]
    for name, r in results.items():
        s = r["settings"]
        md += [f"## {name}: profile {s['profile_s'][0]:g}-{s['profile_s'][1]:g} s of neutral clips, "
               f"{r['speakers']} speakers", ""]
        md += _table(r["overall"])
        md += ["", "| held-out corpus | eligible / speakers | shrinkage | none | after all | raw | mapped | "
               "neutral-ref | raw+examples |", "|---|---|---|---|---|---|---|---|---|"]
        for c, pc in r["per_corpus"].items():
            if pc["summary"] is None:
                md.append(f"| {c} | 0 / {pc['speakers']} | - | | | | | | |")
                continue
            ss = pc["summary"]
            md.append(f"| {c} | {pc['eligible_speakers']} / {pc['speakers']} | "
                      f"{pc['shrinkage'][0]:g} (L2 {pc['shrinkage'][1]:g}) | " +
                      " | ".join(f"{ss[k]['mean_ua']:.3f}" for k in CONDITIONS) + " |")
        md += ["", f"({r['seconds']:.0f} s)", ""]
    (out_dir / "profiles.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return out_dir / "profiles.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.profile_eval", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None,
                   help="data root (default $REALTIME_SER_DATA, else ../shared/data beside the checkout, "
                        "else /work/shared/data)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "reports")
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.data is None:
        env = os.environ.get("REALTIME_SER_DATA")
        here = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
        args.data = Path(env) if env else here if here.is_dir() else Path("/work/shared/data")
    if not (args.data / "ravdess").is_dir():
        print(f"error: data root {args.data} has no ravdess/; give --data DIR", file=sys.stderr)
        return 2
    cs = ClipSet.from_cache(extract(args.data, args.cache, min(args.jobs, 2)))
    results = {"main": evaluate_profiles(cs, jobs=min(args.jobs, 2)),
               "short": evaluate_profiles(cs, jobs=min(args.jobs, 2), profile_min_s=20.0)}
    print(f"report: {write_reports(results, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
