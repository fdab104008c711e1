"""Fit the chosen recipe on all clips of both corpora, export ONNX + model card, check parity.

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

import numpy as np

from realtime_ser import features
from realtime_ser.errors import SerError
from realtime_ser.model import Model, with_label_checksum
from realtime_ser.vad import VadParams

from .data import PROTOCOL_CORPORA, corpus_labels, load_manifest
from .dataset import DEFAULT_CACHE_DIR, Framing, load_windows
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
    for corpus, p in report["protocols"].items():
        if key not in p.get("results", {}):
            raise ExportError(f"evaluation report has no {key} results for {corpus}; evaluate that recipe and mode "
                              f"(`python -m train evaluate --recipe {recipe}`) or pick one it has")
        complete = complete and bool(p.get("complete"))

        def pick(fig: dict) -> dict:
            d = {k: fig[k] for k in CARD_FIGURE_KEYS if k in fig}
            d.update(protocol=p["protocol"], level="utterance")
            return d

        evaluation[corpus] = pick(p["results"][key]["utterance"])
        evaluation[corpus]["window_level"] = {k: p["results"][key]["window"][k] for k in ("ua", "accuracy", "macro_f1")}
        evaluation[corpus]["utterance_fold_ua"] = p["results"][key]["utterance_fold_ua"]
        if "seed_baseline" in p:
            sb = p["seed_baseline"]
            seed[corpus] = pick(sb["utterance"])
            seed[corpus].update({k: sb[k] for k in ("random_states", "utterance_ua_by_random_state",
                                                    "utterance_ua_mean", "utterance_ua_std") if k in sb})
    return evaluation, seed, complete


def render_model_card(card: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f} %"

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
        lines += ["**These figures come from a quick run on a subset of speakers or folds, not the full protocols.**", ""]
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
    for p, e in card["evaluation"].items():
        lines += [f"{e['protocol']}. Per-class recall: " +
                  ", ".join(f"{k} {pct(v)}" for k, v in e["per_class_recall"].items()) + ".", ""]
    par = card["parity"]
    lines += ["## Export checks", "",
              f"onnxruntime vs scikit-learn, labels identical and probabilities within {par['atol']:g}: " +
              "; ".join(f"{k}: {v['windows']} windows, max diff {v['max_abs_prob_diff']:.1e}" for k, v in par["sets"].items())
              + ".", "", f"ONNX sha256 `{card['onnx_sha256']}`, {card['onnx_bytes']} bytes.", "",
              "## Limits", "",
              "Acted speech by 34 professional actors (English and German), studio conditions: expect lower figures on "
              "spontaneous speech, other languages, far-field or noisy microphones. Emotion labels are the actors' "
              "intended categories. Do not use for decisions about people.", ""]
    return "\n".join(lines)


def export(*, data_root: Path, out_dir: Path, recipe: str, mode: str, report: dict, name: str = "default",
           cache_dir: Path | None = DEFAULT_CACHE_DIR, jobs: int = 2, speakers: set[str] | None = None,
           corpora: tuple[str, ...] = PROTOCOL_CORPORA, framing: Framing = Framing(), vad_params: VadParams = VadParams(),
           params: dict | None = None) -> dict:
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
        tables.append(load_windows(corpus, clips, framing=framing, vad_params=vad_params, cache_dir=cache_dir, jobs=jobs))
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
    if not np.array_equal(pipe.classes_, np.arange(len(labels))):
        raise ExportError(f"the fitted model knows classes {list(pipe.classes_)} but the labels are {labels}; "
                          f"every label needs training clips")

    t0 = time.perf_counter()
    onnx_bytes = to_onnx(pipe)
    onnx_bytes = with_label_checksum(onnx_bytes, labels)  # issue 12: the label order is checked at load
    timing["convert_s"] = time.perf_counter() - t0
    if len(onnx_bytes) > MAX_MODEL_BYTES:
        raise ExportError(f"the ONNX model is {len(onnx_bytes) / 1e6:.1f} MB, over the {MAX_MODEL_BYTES / 1e6:.0f} MB "
                          f"limit for a shipped model; choose a smaller recipe")

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
        "name": name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": git_commit(),
        "labels": labels,
        "sample_rate": framing.sample_rate,
        "window_s": framing.window_s,
        "hop_s": framing.hop_s,
        "feature_spec": {**features.FEATURE_SPEC, "hash": features.SPEC_HASH},
        "input_width": features.N_FEATURES,
        "normalization": prior.to_json() if prior is not None else {"type": "none"},
        "vad": asdict(vad_params),
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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{name}.onnx"
    onnx_path.write_bytes(onnx_bytes)
    onnx_path.with_suffix(".json").write_text(json.dumps(card, indent=1), encoding="utf-8")
    (out_dir / "MODEL_CARD.md").write_text(render_model_card(card), encoding="utf-8")

    # The runtime's own loader must accept it and agree with scikit-learn.
    written = [onnx_path, onnx_path.with_suffix(".json"), out_dir / "MODEL_CARD.md"]
    try:
        model = Model.load(onnx_path)
        probe = next(X for X in sets.values() if len(X))[:64]
        if not np.allclose(model.predict_proba(probe), pipe.predict_proba(probe.astype(np.float32)), atol=PARITY_ATOL):
            raise ExportError(f"Model.load({onnx_path}) gives other probabilities than scikit-learn")
    except SerError as e:
        for p in written:
            p.unlink(missing_ok=True)
        raise ExportError(f"the exported model fails the runtime's checks ({e}); removed it") from None
    log.info("exported %s (%d bytes, %d labels, parity %s)", onnx_path, len(onnx_bytes), len(labels), parity)
    return card
