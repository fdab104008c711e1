"""The cross-corpus report: ``report.md``, ``report.json`` and one PNG confusion matrix per held-out corpus."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .report import _pct, git_commit, plot_confusion

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
MODE_TITLES = {"population": "population (no adaptation)", "per_file": "per file",
               "per_speaker": "per speaker, online"}
CONDITION_TITLES = {"clean": "clean", "snr20": "20 dB SNR", "snr10": "10 dB SNR", "snr5": "5 dB SNR",
                    "reverb": "reverberant room"}


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def render_markdown(rep: dict) -> str:
    s = rep["settings"]
    cross = rep["cross_corpus"]
    lines = [f"# Cross-corpus evaluation ({s['recipe']}, labels {', '.join(s['labels'])})", "",
             f"Created {rep.get('created')} from commit `{rep.get('git_commit')}`. Recipe: {s['description']}; "
             f"augmentation of training corpora: {'yes' if s['augment'] else 'no'}. Corpus emotions merged: "
             f"{s['merge'] or 'none'}; clips of other emotions left out.", "",
             "Leave one corpus out: the model is fitted on the voiced windows of the other corpora (each "
             "(corpus, class) weighted equally, every speaker z-normalised by its own statistics) and scored on "
             "the held-out corpus at utterance level (mean of a clip's voiced-window probabilities) on the "
             "classes it shares with the model. Modes: population = the normaliser's prior only (no adaptation); "
             "per file = a fresh online normaliser per clip; per speaker = one online normaliser per speaker, "
             "carried over that speaker's clips in a seeded random order (the runtime's `OnlineNormalizer`). "
             f"Hyper-parameters: chosen per outer fold by inner leave-one-corpus-out on its training corpora "
             f"({s['select_mode']} UA) from {s['grid']}" + (f"; fixed to {s['fixed_params']} for this run"
                                                           if s.get("fixed_params") else "") + ". "
             f"Evaluated but never trained on: {', '.join(s['eval_only']) or 'none'}.", "",
             "| held-out corpus | clips | population UA | per file UA | per speaker UA | per speaker accuracy "
             "| C / params |",
             "|---|---|---|---|---|---|---|"]
    for h, d in cross["corpora"].items():
        lines.append(f"| {h}{'' if d.get('trained_on', True) else ' (eval only)'} | {rep['counts'][h]['clips']} | "
                     f"{_pct(d['population']['ua'])} | {_pct(d['per_file']['ua'])} | {_pct(d['per_speaker']['ua'])} | "
                     f"{_pct(d['per_speaker']['accuracy'])} | {rep['selected_params'].get(h)} |")
    m = cross["mean"]
    lines.append(f"| **mean** | | **{_pct(m['population']['ua'])}** | **{_pct(m['per_file']['ua'])}** | "
                 f"**{_pct(m['per_speaker']['ua'])}** | {_pct(m['per_speaker']['accuracy'])} | |")
    lines += ["", "Per-class recall, per speaker online:", ""]
    for h, d in cross["corpora"].items():
        pc = d["per_speaker"]["per_class_recall"]
        lines.append(f"- {h}: " + ", ".join(f"{k} {_pct(v)}" for k, v in pc.items() if v is not None) +
                     f" (`cross-{h}.png`)")
    rob = rep.get("robustness", {})
    if rob.get("mean"):
        conds = list(rob["mean"])
        lines += ["", "## Robustness (per speaker online UA, same outer models, test audio degraded)", "",
                  "| held-out corpus | " + " | ".join(CONDITION_TITLES.get(c, c) for c in conds) + " |",
                  "|---" * (len(conds) + 1) + "|"]
        for h, d in rob["corpora"].items():
            lines.append(f"| {h} | " + " | ".join(_pct(d.get(c)) for c in conds) + " |")
        lines.append("| **mean** | " + " | ".join(f"**{_pct(rob['mean'][c])}**" for c in conds) + " |")
    if rep.get("within"):
        lines += ["", "## Within corpus (speaker-independent, per speaker online, on the model's label set)", "",
                  "| corpus | UA | accuracy | fold UA mean ± std |", "|---|---|---|---|"]
        for c, w in rep["within"].items():
            v = np.array(list(w["fold_ua"].values()))
            lines.append(f"| {c} | {_pct(w['ua'])} | {_pct(w['accuracy'])} | "
                         f"{100 * v.mean():.1f} ± {100 * v.std():.1f} |")
    t = rep["timing"]
    lines += ["", f"Run time: {t['total_s']:.0f} s ({t['features_s']:.0f} s loading windows, "
                  f"{t['folds_wall_s']:.0f} s folds on {s['jobs']} process(es), {s['cpu_count']} CPUs, "
                  "shared machine).", ""]
    return "\n".join(lines)


def write_cross_report(rep: dict, out_dir: Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rep.setdefault("created", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    rep.setdefault("git_commit", git_commit())
    for h, d in rep["cross_corpus"]["corpora"].items():
        f = d["per_speaker"]
        plot_confusion(f["confusion"], f["labels"], f"held out {h}: per speaker online, UA {100 * f['ua']:.1f} %",
                       out / f"cross-{h}.png")
    (out / REPORT_JSON).write_text(json.dumps(rep, indent=1, default=_json_default), encoding="utf-8")
    (out / REPORT_MD).write_text(render_markdown(rep), encoding="utf-8")
    return out


def read_cross_report(out_dir: Path) -> dict:
    return json.loads((Path(out_dir) / REPORT_JSON).read_text(encoding="utf-8"))
