"""Fit a recipe on all training clips, export ONNX + model card, check parity.

``export_cross`` (issue 9, what ``python -m train`` ships): the cross-corpus report's recipe, label set and
augmentation setting, fitted on every trainable corpus (TurEV-DB is evaluation-only), C chosen by
leave-one-corpus-out over them; the card carries ``evaluation.cross_corpus``, the within-corpus figures,
robustness, the label study, corpus credits and licences, and the VRM mapping. ``export`` is the older
two-corpus path (one ``train.recipes`` recipe on RAVDESS + EmoDB), kept for its evaluation report.

* Labels: the union of the corpora's emotions in ``data.ALL_LABELS`` order, integer-encoded
  (0..K-1), so the ONNX ``label`` output is int64 and the ``probabilities`` columns follow
  the card's ``labels``.
* Hyper-parameters: the recipe's grid is searched by speaker-grouped CV over all training
  speakers (both corpora), as in evaluation.
* Normalisation ``online_speaker``: every speaker z-normalised with its own statistics in
  training; the card carries the prior (mean over all training speakers of per-speaker means
  and variances) that the runtime's ``OnlineNormalizer`` starts from.
* Parity: onnxruntime and scikit-learn must give identical labels and probabilities within
  ``PARITY_ATOL`` on (a) the training inputs and (b) inputs the model was not fitted on: the
  windows the VAD dropped, and every window normalised causally as the runtime would
  (``online_speaker``); otherwise the export fails and nothing is written.
* The evaluation figures in the card come from an evaluation report (same recipe and mode).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from realtime_ser import features
from realtime_ser.errors import SerError
from realtime_ser.model import Model, with_label_checksum
from realtime_ser.vad import VadParams

from .data import PROTOCOL_CORPORA, corpus_labels, load_manifest
from .dataset import DEFAULT_CACHE_DIR, DEFAULT_FRAMING, DEFAULT_VAD_PARAMS, Framing, load_windows
from .evaluate import CorpusData, fit_model, per_speaker_normalise, select_params, simulate_online
from .recipes import get_recipe
from .report import git_commit

log = logging.getLogger(__name__)

PARITY_ATOL = 1e-4
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
INPUT_NAME = "features"
MAX_MODEL_BYTES = 8 * 1024 * 1024  # "a few MB at most"
CARD_FIGURE_KEYS = ("protocol", "ua", "accuracy", "macro_f1", "kappa", "mcc", "per_class_recall", "confusion", "labels")
LICENSE = {
    "name": "CC BY-NC-SA 4.0",
    "non_commercial": True,
    "statement": "Trained on RAVDESS (CC BY-NC-SA 4.0) and EmoDB: this model is for non-commercial use only, "
                 "is shared under CC BY-NC-SA 4.0 and must carry the credits below.",
    "credits": [
        "Livingstone SR, Russo FA (2018), The Ryerson Audio-Visual Database of Emotional Speech and Song "
        "(RAVDESS), PLoS ONE 13(5): e0196391.",
        "Burkhardt F, Paeschke A, Rolfes M, Sendlmeier W, Weiss B (2005), A Database of German Emotional "
        "Speech, Interspeech 2005.",
    ],
}


class ExportError(SerError):
    """The export cannot produce a model that is safe to ship (parity, size, evaluation source)."""

    exit_code = 1


def to_onnx(pipe, n_features: int = features.N_FEATURES) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    clf = pipe.steps[-1][1]
    with warnings.catch_warnings():
        # skl2onnx reads SVC.probA_/probB_ (deprecated in scikit-learn 1.9); unused after calibration.
        warnings.filterwarnings("ignore", message=r"Attribute `prob[AB]_` was deprecated", category=FutureWarning)
        onx = convert_sklearn(pipe, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
                              options={id(clf): {"zipmap": False}}, target_opset=TARGET_OPSET)
    return onx.SerializeToString()


def _session(onnx_bytes: bytes):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def check_parity(onnx_bytes: bytes, pipe, sets: dict[str, np.ndarray], atol: float = PARITY_ATOL) -> dict:
    """onnxruntime vs scikit-learn on each named input set; ``ExportError`` if they disagree."""
    sess = _session(onnx_bytes)
    outs = [o.name for o in sess.get_outputs()]
    label_name = next(n for n in outs if "label" in n.lower())
    prob_name = next(n for n in outs if "prob" in n.lower())
    result = {}
    for name, X in sets.items():
        if len(X) == 0:
            continue
        X32 = np.ascontiguousarray(X, dtype=np.float32)
        lab_onnx, prob_onnx = sess.run([label_name, prob_name], {INPUT_NAME: X32})
        prob_skl = pipe.predict_proba(X32)
        lab_skl = pipe.predict(X32)
        if lab_onnx.dtype != np.int64:
            raise ExportError(f"ONNX label output is {lab_onnx.dtype}, expected int64; labels must be integer-encoded")
        max_diff = float(np.max(np.abs(prob_onnx - prob_skl)))
        mismatches = int(np.sum(lab_onnx != lab_skl))
        result[name] = {"windows": int(len(X)), "max_abs_prob_diff": max_diff, "label_mismatches": mismatches}
        if mismatches or not max_diff <= atol:
            raise ExportError(f"ONNX/scikit-learn parity fails on {name} ({len(X)} windows): {mismatches} label "
                              f"mismatch(es), max probability difference {max_diff:.2e} > {atol:g}; not exported")
    return result


def evaluation_for_card(report: dict, recipe: str, mode: str) -> tuple[dict, dict, bool]:
    """(evaluation, seed_baseline, complete) per protocol from a report, utterance level."""
    key = f"{recipe}/{mode}"
    evaluation, seed = {}, {}
    complete = True

    def pick(fig: dict, protocol: str) -> dict:
        d = {k: fig[k] for k in CARD_FIGURE_KEYS if k in fig}
        d.update(protocol=protocol, level="utterance")
        return d

    for corpus, p in report["protocols"].items():
        if key not in p.get("results", {}):
            raise ExportError(f"evaluation report has no {key} results for {corpus}; evaluate that recipe and mode "
                              f"(`python -m train evaluate --recipe {recipe}`) or pick one it has")
        complete = complete and bool(p.get("complete"))
        evaluation[corpus] = pick(p["results"][key]["utterance"], p["protocol"])
        evaluation[corpus]["window_level"] = {k: p["results"][key]["window"][k] for k in ("ua", "accuracy", "macro_f1")}
        evaluation[corpus]["utterance_fold_ua"] = p["results"][key]["utterance_fold_ua"]
        if "seed_baseline" in p:
            sb = p["seed_baseline"]
            seed[corpus] = pick(sb["utterance"], p["protocol"])
            seed[corpus].update({k: sb[k] for k in ("random_states", "utterance_ua_by_random_state",
                                                    "utterance_ua_mean", "utterance_ua_std") if k in sb})
    return evaluation, seed, complete



def pct(v: float | None) -> str:
    """A fraction as a percentage for the model cards ("-" when missing)."""
    return "-" if v is None else f"{100 * v:.1f} %"


PARITY_PROBE_ROWS = 64  # rows the runtime's loader is checked on against scikit-learn after writing


def _convert(pipe: Any, labels: list[str], timing: dict) -> bytes:
    """The fitted pipeline as ONNX with the label checksum (issue 12: the label order is checked at load)."""
    if not np.array_equal(pipe.classes_, np.arange(len(labels))):
        raise ExportError(f"the fitted model knows classes {list(pipe.classes_)} but the labels are {labels}; "
                          f"every label needs training clips")
    t0 = time.perf_counter()
    onnx_bytes = with_label_checksum(to_onnx(pipe), labels)
    timing["convert_s"] = time.perf_counter() - t0
    if len(onnx_bytes) > MAX_MODEL_BYTES:
        raise ExportError(f"the ONNX model is {len(onnx_bytes) / 1e6:.1f} MB, over the {MAX_MODEL_BYTES / 1e6:.0f} MB "
                          f"limit for a shipped model; choose a smaller recipe")
    return onnx_bytes


def _card_header(name: str, labels: list[str], framing: Framing, normalization: dict,
                 vad_params: VadParams) -> dict:
    """The fields every model card starts with: what the runtime reads to run the model."""
    return {
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": git_commit(),
        "labels": labels,
        "sample_rate": framing.sample_rate,
        "window_s": framing.window_s,
        "hop_s": framing.hop_s,
        "feature_spec": {**features.FEATURE_SPEC, "hash": features.SPEC_HASH},
        "input_width": features.N_FEATURES,
        "normalization": normalization,
        "vad": asdict(vad_params),
    }


def _write_and_verify(out_dir: Path, name: str, onnx_bytes: bytes, card: dict, markdown: str, pipe: Any,
                      probe: np.ndarray) -> Path:
    """Write ``<name>.onnx``, its card and MODEL_CARD.md, then load them with the runtime's own loader,
    which must accept them and agree with scikit-learn on ``probe``; on failure the files are removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{name}.onnx"
    onnx_path.write_bytes(onnx_bytes)
    onnx_path.with_suffix(".json").write_text(json.dumps(card, indent=1, default=float), encoding="utf-8")
    (out_dir / "MODEL_CARD.md").write_text(markdown, encoding="utf-8")
    written = [onnx_path, onnx_path.with_suffix(".json"), out_dir / "MODEL_CARD.md"]
    try:
        model = Model.load(onnx_path)
        rows = probe[:PARITY_PROBE_ROWS]
        if not np.allclose(model.predict_proba(rows), pipe.predict_proba(rows.astype(np.float32)), atol=PARITY_ATOL):
            raise ExportError(f"Model.load({onnx_path}) gives other probabilities than scikit-learn")
    except SerError as e:
        for p in written:
            p.unlink(missing_ok=True)
        raise ExportError(f"the exported model fails the runtime's checks ({e}); removed it") from None
    return onnx_path

def render_model_card(card: dict) -> str:
    r = card["recipe"]
    lines = [f"# Model card: {card['name']}", "",
             f"Speech-emotion classifier for realtime-ser: {len(card['labels'])} classes "
             f"({', '.join(card['labels'])}) from one {card['window_s']} s window of 16 kHz mono audio "
             f"(hop {card['hop_s']} s), {card['input_width']} hand-crafted features "
             f"(spec `{card['feature_spec']['hash']}`), then `{r['name']}` ({r['description']}, params {r['params']}), "
             f"normalisation `{card['normalization']['type']}`.", "",
             "## License", "", card["license"]["statement"], ""]
    lines += [f"- {c}" for c in card["license"]["credits"]]
    td = card["training_data"]
    lines += ["", "## Training data", "",
              f"All clips of {', '.join(td['corpora'])}: {td['clips']} clips, {td['speakers']} speakers, "
              f"{td['voiced_windows']} voiced windows used (of {td['windows']}; the rest dropped by the VAD "
              f"{card['vad']}).", "", "| corpus | clips | speakers | voiced windows |", "|---|---|---|---|"]
    for c, d in td["per_corpus"].items():
        lines.append(f"| {c} | {d['clips']} | {d['speakers']} | {d['voiced_windows']} |")
    lines += ["", "## Evaluation (speaker-independent, utterance level)", ""]
    if not card.get("evaluation_complete", True):
        lines += ["**These figures come from a quick run on a subset of speakers or folds, not the full "
                  "protocols.**", ""]
    lines += ["The recipe was evaluated on each corpus' standard folds, never scoring a speaker it was trained on "
              "(see `python -m train evaluate`); the shipped model is then refitted on all clips. "
              "UA = mean per-class recall.", "",
              "| protocol | UA | accuracy | macro F1 | seed UA | seed accuracy | seed UA, mean over MLP seeds |",
              "|---|---|---|---|---|---|---|"]
    for p, e in card["evaluation"].items():
        s = card["seed_baseline"].get(p, {})
        spread = (f"{pct(s['utterance_ua_mean'])} ± {pct(s['utterance_ua_std'])}" if "utterance_ua_mean" in s else "-")
        lines.append(f"| {p} | {pct(e['ua'])} | {pct(e['accuracy'])} | {pct(e['macro_f1'])} | "
                     f"{pct(s.get('ua'))} | {pct(s.get('accuracy'))} | {spread} |")
    lines += [""]
    for e in card["evaluation"].values():
        lines += [f"{e['protocol']}. Per-class recall: " +
                  ", ".join(f"{k} {pct(v)}" for k, v in e["per_class_recall"].items()) + ".", ""]
    par = card["parity"]
    lines += ["## Export checks", "",
              f"onnxruntime vs scikit-learn, labels identical and probabilities within {par['atol']:g}: " +
              "; ".join(f"{k}: {v['windows']} windows, max diff {v['max_abs_prob_diff']:.1e}"
                        for k, v in par["sets"].items())
              + ".", "", f"ONNX sha256 `{card['onnx_sha256']}`, {card['onnx_bytes']} bytes.", "",
              "## Limits", "",
              "Acted speech by 34 professional actors (English and German), studio conditions: expect lower figures on "
              "spontaneous speech, other languages, far-field or noisy microphones. Emotion labels are the actors' "
              "intended categories. Do not use for decisions about people.", ""]
    return "\n".join(lines)


def export(*, data_root: Path, out_dir: Path, recipe: str, mode: str, report: dict, name: str = "default",
           cache_dir: Path | None = DEFAULT_CACHE_DIR, jobs: int = 2, speakers: set[str] | None = None,
           corpora: tuple[str, ...] = PROTOCOL_CORPORA, framing: Framing = DEFAULT_FRAMING,
           vad_params: VadParams = DEFAULT_VAD_PARAMS, params: dict | None = None) -> dict:
    """Fit on all clips, convert, check, write ``<out_dir>/<name>.onnx|.json`` and ``MODEL_CARD.md``."""
    rec = get_recipe(recipe)
    evaluation, seed, complete = evaluation_for_card(report, recipe, mode)
    timing = {}
    t0 = time.perf_counter()
    tables = []
    for corpus in corpora:
        clips = load_manifest(data_root, corpus)
        if speakers is not None:
            clips = [c for c in clips if c.speaker in speakers]
        tables.append(load_windows(corpus, clips, framing=framing, vad_params=vad_params, cache_dir=cache_dir,
                                   jobs=jobs))
    labels = corpus_labels([c for t in tables for c in t.clips])
    data = CorpusData.from_tables("all", tables, labels)
    timing["features_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    all_clips = np.arange(data.n_clips)
    selection: list = []
    if params is None:
        params, selection = select_params(recipe, mode, data, all_clips)
    timing["select_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe, prior = fit_model(recipe, params, mode, data, all_clips)
    timing["fit_s"] = time.perf_counter() - t0
    onnx_bytes = _convert(pipe, labels, timing)

    # Parity on the training inputs and on inputs the model was not fitted on.
    voiced = np.flatnonzero(data.speech)
    dropped = np.flatnonzero(~data.speech)
    groups = data.window_speakers()
    if prior is None:
        sets = {"training_windows": data.X[voiced], "vad_dropped_windows": data.X[dropped]}
    else:
        runtime = simulate_online(data, np.arange(len(data.X)), prior)
        sets = {"training_windows": per_speaker_normalise(data.X[voiced], groups[voiced]),
                "runtime_normalised_windows": runtime}
    t0 = time.perf_counter()
    parity = check_parity(onnx_bytes, pipe, sets)
    timing["parity_s"] = time.perf_counter() - t0

    per_corpus = {t.corpus: t.counts() for t in tables}
    card = {
        **_card_header(name, labels, framing, prior.to_json() if prior is not None else {"type": "none"},
                       vad_params),
        "recipe": {"name": recipe, "description": rec.description, "params": params, "norm": mode,
                   "selection": selection, "selection_method": "speaker-grouped CV over all training speakers"},
        "training_data": {"corpora": [t.corpus for t in tables], "clips": sum(d["clips"] for d in per_corpus.values()),
                          "speakers": sum(d["speakers"] for d in per_corpus.values()),
                          "windows": sum(d["windows"] for d in per_corpus.values()),
                          "voiced_windows": int(data.speech.sum()), "per_corpus": per_corpus},
        "evaluation": evaluation,
        "evaluation_complete": complete,
        "seed_baseline": seed,
        "parity": {"atol": PARITY_ATOL, "sets": parity},
        "license": LICENSE,
        "onnx_bytes": len(onnx_bytes),
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "timing_s": timing,
    }
    onnx_path = _write_and_verify(Path(out_dir), name, onnx_bytes, card, render_model_card(card), pipe,
                                  next(X for X in sets.values() if len(X)))
    log.info("exported %s (%d bytes, %d labels, parity %s)", onnx_path, len(onnx_bytes), len(labels), parity)
    return card


# ---------------------------------------------------------------- the cross-corpus model (issue 9)

# What the card says of each corpus (the list of corpora itself comes from the data root).
CORPUS_INFO = {
    "ravdess": {"language": "English", "kind": "24 actors, studio", "licence": "CC BY-NC-SA 4.0",
                "credit": "Livingstone SR, Russo FA (2018), The Ryerson Audio-Visual Database of Emotional Speech "
                          "and Song (RAVDESS), PLoS ONE 13(5): e0196391."},
    "emodb": {"language": "German", "kind": "10 actors, studio", "licence": "free for research (its authors)",
              "credit": "Burkhardt F, Paeschke A, Rolfes M, Sendlmeier W, Weiss B (2005), A Database of German "
                        "Emotional Speech, Interspeech 2005."},
    "nemo": {"language": "Polish", "kind": "9 actors, studio", "licence": "CC BY-NC-SA 4.0 (github.com/amu-cai/nEMO)",
             "credit": "Christop I (2024), nEMO: Dataset of Emotional Speech in Polish, LREC-COLING 2024."},
    "ased": {"language": "Amharic", "kind": "65 volunteers, self-recorded at home",
             "licence": "published for research, no licence file (github.com/Ethio2021/ASED_V1)",
             "credit": "Retta EA, Almekhlafi E, Sutcliffe R, Mhamed M, Ali H, Feng J (2022), A New Amharic Speech "
                       "Emotion Dataset and Classification Benchmark, ACM TALLIP, doi 10.1145/3529759."},
    "spanish": {"language": "Spanish", "kind": "14 non-professional speakers",
                "licence": "no licence stated, research use (github.com/rcebrian/speech-emotion-recognition)",
                "credit": "Spanish student corpus, github.com/rcebrian/speech-emotion-recognition (commit f44cf6d)."},
    "turev": {"language": "Turkish", "kind": "6 actors, single words",
              "licence": "CC BY-NC-ND 4.0 in its README, GPL-3.0 in its LICENSE file (github.com/Xeonen/TurEV-DB)",
              "credit": "Canpolat SF, Ormanoğlu Z, Zeyrek D (2020), Turkish Emotion Voice Database (TurEV-DB), "
                        "LREC 2020 workshop SLTU-CCURL."},
}
UNKNOWN_CORPUS_INFO = {"language": "?", "kind": "?", "licence": "see the corpus folder",
                       "credit": "see the corpus folder"}
EVAL_ONLY_REASON = {
    "turev": "evaluated on (held out in the cross-corpus protocol) but NOT trained on: its README licenses it "
             "CC BY-NC-ND 4.0, and a model trained on it would be a derivative, which the no-derivatives clause "
             "forbids (its LICENSE file says GPL-3.0; with the two in conflict the stricter reading is kept).",
}
# Avatar expressions (VRM 1.0 presets) driven by each class; relaxed and surprised get no class.
VRM_MAPPING = {"neutral": "neutral", "happy": "happy", "angry": "angry", "sad": "sad"}
VRM_UNUSED = {"relaxed": "calm was merged into neutral: calm vs neutral is not separable across corpora (see "
                         "label_decision); drive it from neutral at low arousal if wanted, the model does not",
              "surprised": "not a shipped class: learnt from too few corpora (see label_decision)"}
CROSS_CARD_KEYS = ("ua", "accuracy", "per_class_recall", "confusion", "labels")


def cross_license(corpora: list[str]) -> dict:
    names = ", ".join(corpora)
    return {"name": "CC BY-NC-SA 4.0", "non_commercial": True,
            "statement": f"Trained on {names}. RAVDESS and nEMO are CC BY-NC-SA 4.0, the others research-only: "
                         "this model is for non-commercial use only, is shared under CC BY-NC-SA 4.0 and must "
                         "carry the credits below.",
            "credits": [CORPUS_INFO.get(c, UNKNOWN_CORPUS_INFO)["credit"] for c in corpora]}


def cross_evaluation_for_card(rep: dict) -> dict:
    """``{"cross_corpus": {"corpora": {c: {mode: figures}}, "mean": {mode: {"ua"}}}, <within corpus>: figures}``."""
    cc = rep["cross_corpus"]
    out = {"cross_corpus": {
        "protocol": "leave one corpus out, utterance level, on the classes the held-out corpus shares with the model",
        "corpora": {c: {m: {k: d[m][k] for k in CROSS_CARD_KEYS} for m in rep["settings"]["modes"]}
                    for c, d in cc["corpora"].items()},
        "mean": {m: {"ua": v["ua"]} for m, v in cc["mean"].items()},
        "selected_params": rep["selected_params"]}}
    for c, w in rep.get("within", {}).items():
        out[c] = {k: w[k] for k in CARD_FIGURE_KEYS if k in w}
        out[c]["protocol"] = (f"{c}: speaker-independent standard folds on the model's {len(w['labels'])} classes "
                              f"({rep['settings']['merge'] or 'no merge'}), per speaker online")
        out[c]["fold_ua"] = w["fold_ua"]
    return out


def export_cross(*, data_root: Path, out_dir: Path, rep: dict, name: str = "default",
                 cache_dir: Path | None = DEFAULT_CACHE_DIR, jobs: int = 2, extra: dict | None = None,
                 framing: Framing = DEFAULT_FRAMING, vad_params: VadParams = DEFAULT_VAD_PARAMS) -> dict:
    """Fit the cross-corpus report's recipe on every trainable corpus, convert, check, write the model + card."""
    from . import crosscorpus as cc
    from .xrecipes import get_xrecipe

    s = rep["settings"]
    ls = cc.LABEL_SETS[s["label_set"]]
    trainable = [c for c in s["trainable"] if c in rep["counts"]]
    timing = {}
    t0 = time.perf_counter()
    conditions = ("clean", "aug") if s["augment"] else ("clean",)
    pool = cc.load_pool(data_root, tuple(trainable), ls, conditions, cache_dir=cache_dir, jobs=jobs, framing=framing)
    timing["features_s"] = time.perf_counter() - t0
    clips = np.arange(len(pool.clips))
    cc._POOL["train_norm"] = s.get("train_norm", "speaker")
    t0 = time.perf_counter()
    selection: list
    if s.get("fixed_params"):
        params, selection = dict(s["fixed_params"]), []
    else:
        cc._POOL["pool"] = pool
        params, selection = cc.select(s["recipe"], pool, clips, s["augment"])
    timing["select_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe, prior = cc.fit(s["recipe"], params, pool, clips, s["augment"])
    timing["fit_s"] = time.perf_counter() - t0
    labels = list(pool.labels)
    onnx_bytes = _convert(pipe, labels, timing)
    d = pool.by_condition["clean"]
    X_train, _, _, _ = cc.training_rows(pool, clips, s["augment"], cc._POOL["train_norm"])
    sets = {"training_windows": X_train,
            "runtime_normalised_windows": simulate_online(d, np.arange(len(d.X)), prior)}
    t0 = time.perf_counter()
    parity = check_parity(onnx_bytes, pipe, sets)
    timing["parity_s"] = time.perf_counter() - t0

    per_corpus: dict[str, dict[str, Any]] = {}
    for c in trainable:
        sel = pool.clip_corpus == c
        win = np.isin(d.clip_index, np.flatnonzero(sel))
        info = CORPUS_INFO.get(c, UNKNOWN_CORPUS_INFO)
        per_corpus[c] = {"clips": int(sel.sum()), "speakers": len(set(d.clip_speaker[sel])),
                         "windows": int(win.sum()), "voiced_windows": int((win & d.speech).sum()),
                         "labels": {lab: int(np.sum(d.clip_y[sel] == i)) for i, lab in enumerate(labels)}, **info}
        if s["augment"]:
            a = pool.by_condition["aug"]
            aug_voiced = np.isin(a.clip_index, np.flatnonzero(sel)) & a.speech
            per_corpus[c]["augmented_voiced_windows"] = int(aug_voiced.sum())
    not_trained = {c: {**CORPUS_INFO.get(c, UNKNOWN_CORPUS_INFO),
                       "use": EVAL_ONLY_REASON.get(c, "evaluated on, not trained on")}
                   for c in s["eval_only"]}
    rec = get_xrecipe(s["recipe"])
    card = {
        **_card_header(name, labels, framing, prior.to_json(), vad_params),
        "recipe": {"name": s["recipe"], "description": rec.description, "params": params, "norm": "online_speaker",
                   "train_norm": s.get("train_norm", "speaker"), "augment": s["augment"],
                   "weighting": "every (corpus, class) cell the same total weight",
                   "label_set": ls.name, "merge": dict(ls.merge), "selection": selection,
                   "selection_method": "inner leave-one-corpus-out over the training corpora (per speaker online UA)"},
        "training_data": {"corpora": trainable, "clips": sum(v["clips"] for v in per_corpus.values()),
                          "speakers": sum(v["speakers"] for v in per_corpus.values()),
                          "windows": sum(v["windows"] for v in per_corpus.values()),
                          "voiced_windows": sum(v["voiced_windows"] for v in per_corpus.values()),
                          "per_corpus": per_corpus, "not_trained_on": not_trained,
                          "emotions_left_out": "clips of emotions outside the label set (fearful, disgust, surprised, "
                                               "boredom) are not used"},
        "evaluation": cross_evaluation_for_card(rep),
        "robustness": rep.get("robustness", {}),
        **({"augmentation_decision": rep["augmentation_decision"]} if "augmentation_decision" in rep else {}),
        "avatar_mapping": {"vrm": VRM_MAPPING, "vrm_unused": VRM_UNUSED},
        "parity": {"atol": PARITY_ATOL, "sets": parity},
        "license": cross_license(trainable),
        "onnx_bytes": len(onnx_bytes),
        "onnx_sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "timing_s": {**timing, "cross_corpus_evaluation_s": rep["timing"]["total_s"]},
        **(extra or {}),
    }
    _write_and_verify(Path(out_dir), name, onnx_bytes, card, render_cross_card(card), pipe,
                      sets["runtime_normalised_windows"])
    return card


def render_cross_card(card: dict) -> str:
    r = card["recipe"]
    ev = card["evaluation"]
    cc = ev["cross_corpus"]
    td = card["training_data"]
    lines = [f"# Model card: {card['name']}", "",
             f"Speech-emotion classifier for realtime-ser: {len(card['labels'])} classes ({', '.join(card['labels'])}) "
             f"from one {card['window_s']} s window of 16 kHz mono audio (hop {card['hop_s']} s), "
             f"{card['input_width']} hand-crafted features (spec `{card['feature_spec']['hash']}`), online per-speaker "
             f"normalisation, then `{r['name']}` ({r['description']}, params {r['params']}). Corpus emotions merged: "
             f"{r['merge']}. Training audio augmented: {'yes' if r['augment'] else 'no'}; classes weighted "
             f"{r['weighting']}.", "",
             "## License", "", card["license"]["statement"], ""]
    lines += [f"- {c}" for c in card["license"]["credits"]]
    lines += ["", "## Training data", "",
              f"{td['clips']} clips of {len(td['corpora'])} corpora, {td['speakers']} speakers, {td['voiced_windows']} "
              f"voiced windows (of {td['windows']}; the rest dropped by the speech gate {card['vad']}); "
              f"{td['emotions_left_out']}.", "",
              "| corpus | language | speakers | clips | voiced windows | licence |", "|---|---|---|---|---|---|"]
    for c, d in td["per_corpus"].items():
        lines.append(f"| {c} | {d['language']} | {d['speakers']} | {d['clips']} | {d['voiced_windows']} "
                     f"| {d['licence']} |")
    for c, d in td["not_trained_on"].items():
        lines += ["", f"**{c}** ({d['language']}, {d['licence']}): {d['use']} Credit: {d['credit']}"]
    lines += ["", "## Cross-corpus evaluation (leave one corpus out, utterance level)", "",
              "Each corpus held out in turn: trained on the others (TurEV-DB never trained on), scored on the "
              "classes it shares with the model. population = no adaptation; per file = the online normaliser "
              "reset per clip; "
              "per speaker = the runtime's online normaliser carried over a speaker's clips (seeded random order). "
              "Hyper-parameters chosen inside each outer fold by inner leave-one-corpus-out.", "",
              "| held-out corpus | population UA | per file UA | per speaker UA | per speaker accuracy | params |",
              "|---|---|---|---|---|---|"]
    for c, d in cc["corpora"].items():
        lines.append(f"| {c} | {pct(d['population']['ua'])} | {pct(d['per_file']['ua'])} "
                     f"| {pct(d['per_speaker']['ua'])} "
                     f"| {pct(d['per_speaker']['accuracy'])} | {cc['selected_params'].get(c)} |")
    m = cc["mean"]
    lines.append(f"| **mean** | **{pct(m['population']['ua'])}** | **{pct(m['per_file']['ua'])}** | "
                 f"**{pct(m['per_speaker']['ua'])}** | | |")
    within = [k for k in ev if k != "cross_corpus"]
    if within:
        lines += ["", "## Within corpus (speaker-independent standard folds, per speaker online)", "",
                  "| protocol | UA | accuracy | per-class recall |", "|---|---|---|---|"]
        for k in within:
            e = ev[k]
            lines.append(f"| {e['protocol']} | {pct(e['ua'])} | {pct(e['accuracy'])} | " +
                         ", ".join(f"{a} {pct(b)}" for a, b in e["per_class_recall"].items()) + " |")
    rob = card.get("robustness", {}).get("mean")
    if rob:
        lines += ["", "## Robustness (cross-corpus mean UA, per speaker online, test audio degraded)", "",
                  "| " + " | ".join(rob) + " |", "|---" * len(rob) + "|",
                  "| " + " | ".join(pct(v) for v in rob.values()) + " |"]
        ad = card.get("augmentation_decision")
        if ad:
            for k in ("robustness_without_augmentation", "robustness_with_augmentation"):
                lines += ["", f"{k.replace('_', ' ')}: " + ", ".join(f"{a} {pct(b)}" for a, b in ad[k].items())]
            lines += ["", f"Augmentation {'kept' if ad['kept'] else 'not kept'}: {ad['rule']}."]
    if "label_decision" in card:
        lines += ["", "## Label set", ""] + [f"- {t}" for t in card["label_decision"].get("notes", [])]
    am = card["avatar_mapping"]
    lines += ["", "## Avatar mapping (VRM expressions)", "", "| class | VRM expression |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in am["vrm"].items()]
    lines += [f"| (none) | {a}: {b} |" for a, b in am["vrm_unused"].items()]
    t = card["timing_s"]
    par = card["parity"]
    lines += ["", "## Training time and checks", "",
              ", ".join(f"{k} {v:.0f} s" for k, v in t.items() if isinstance(v, (int, float))) +
              " (2-core machine shared with other jobs).", "",
              f"onnxruntime vs scikit-learn within {par['atol']:g}: " +
              "; ".join(f"{k}: {v['windows']} windows, max diff {v['max_abs_prob_diff']:.1e}"
                        for k, v in par["sets"].items())
              + f". ONNX sha256 `{card['onnx_sha256']}`, {card['onnx_bytes']} bytes.", "",
              "## Limits", "",
              "Acted or read emotional speech (actors, volunteers, students) in English, German, Polish, Amharic and "
              "Spanish: expect lower figures on spontaneous talk. Labels are the intended emotion categories. "
              "Do not use for decisions about people.", ""]
    return "\n".join(lines)
