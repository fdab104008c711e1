"""The evaluation report: ``report.md``, ``report.json`` and PNG confusion matrices in one folder."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from realtime_ser import features

from .data import REPO_ROOT, DataError

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
FIGURE_DPI = 110


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _slug(key: str) -> str:
    return key.replace("/", "-")


def plot_confusion(cm: list[list[int]], labels: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = np.asarray(cm, dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(labels), 0.8 + 0.65 * len(labels)))
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (colour: share of row)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _fold_spread(d: dict) -> str:
    v = np.array(list(d.values()), dtype=float)
    return f"{100 * v.mean():.1f} ± {100 * v.std():.1f}" if len(v) else "-"


def render_markdown(rep: dict) -> str:
    s = rep["settings"]
    lines = ["# Speaker-independent evaluation", "",
             f"Created {rep['created']} from commit `{rep.get('git_commit')}`; feature spec `{rep['spec_hash']}` "
             f"({rep['n_features']} features), windows {rep['framing']['window_s']} s / "
             f"hop {rep['framing']['hop_s']} s, "
             f"VAD {rep['vad']}.", "",
             "Every figure is on speakers the model was not trained on: per outer fold, hyper-parameters are chosen "
             f"by speaker-grouped CV inside the training speakers ({s['inner_folds']} groups), the model is fitted "
             "on the training speakers, and only the held-out speakers are scored. Figures pool all folds' held-out "
             "predictions; `fold UA` is the mean ± std over folds. Utterance = mean of a clip's voiced-window "
             "probabilities (clips with no voiced window: mean of all windows, counted as fallback); window = "
             "voiced windows. `online_speaker`: per-speaker normalisation, simulated causally per test speaker as "
             f"the runtime does (prior weight {s['normalizer']['prior_weight']:g} windows, max count "
             f"{s['normalizer']['max_count']:g}, clip order seed {s['normalizer']['order_seed']}).", ""]
    if s["speakers_limit"] or s["folds_limit"]:
        lines += [f"**Quick run** (speakers per corpus: {s['speakers_limit']}, folds: {s['folds_limit']}): "
                  "these figures are not the protocols' figures.", ""]
    for corpus, p in rep["protocols"].items():
        c = p["counts"]
        lines += [f"## {corpus}", "", p["protocol"], "",
                  f"{c['clips']} clips, {c['speakers']} speakers, {c['windows']} windows of which "
                  f"{c['voiced_windows']} voiced ({c['dropped_windows']} dropped by the VAD; "
                  f"{c['clips_without_voiced_window']} clips without a voiced window). Folds evaluated: "
                  f"{', '.join(p['folds'])}.", "",
                  "| model | norm | utt UA | utt acc | utt macro F1 | utt kappa | utt MCC | fold UA (utt) | "
                  "win UA | win acc | fallback clips | selected params |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in p["results"].values():
            u, w = r["utterance"], r["window"]
            params = sorted({json.dumps(v, sort_keys=True) for v in r["selected_params"].values()})
            lines.append(f"| {r['recipe']} | {r['norm']} | **{_pct(u['ua'])}** | {_pct(u['accuracy'])} | "
                         f"{_pct(u['macro_f1'])} | {u['kappa']:.3f} | {u['mcc']:.3f} | "
                         f"{_fold_spread(r['utterance_fold_ua'])} | "
                         f"{_pct(w['ua'])} | {_pct(w['accuracy'])} | {r['fallback_clips']} | {'; '.join(params)} |")
        if "seed_baseline" in p:
            sb = p["seed_baseline"]
            u = sb["utterance"]
            lines.append(f"| seed MLP (180 clip means), random_state {sb['random_states'][0]} | none | "
                         f"**{_pct(u['ua'])}** | {_pct(u['accuracy'])} | "
                         f"{_pct(u['macro_f1'])} | {u['kappa']:.3f} | {u['mcc']:.3f} | "
                         f"{_fold_spread(p['seed_baseline']['utterance_fold_ua'])} | - | - | - | seed |")
        if "seed_baseline" in p:
            sb = p["seed_baseline"]
            lines += ["", f"Seed utterance UA over MLP random states {sb['random_states']}: "
                          f"{', '.join(_pct(v) for v in sb['utterance_ua_by_random_state'])} "
                          f"(mean {_pct(sb['utterance_ua_mean'])} ± {_pct(sb['utterance_ua_std'])})."
                          + (f" Not converged in 500 iterations in folds {sb['folds_not_converged']}."
                             if sb["folds_not_converged"] else "")]
        lines += ["", "Per-class recall, utterance level (%):", "",
                  "| model | " + " | ".join(p["labels"]) + " |", "|---" * (len(p["labels"]) + 1) + "|"]
        entries = [(k, r["utterance"]) for k, r in p["results"].items()]
        if "seed_baseline" in p:
            entries.append(("seed", p["seed_baseline"]["utterance"]))
        for k, u in entries:
            lines.append(f"| {k} | " + " | ".join(_pct(u["per_class_recall"][lab]) for lab in p["labels"]) + " |")
        lines += ["", "Confusion matrices (utterance level): " +
                  ", ".join(f"[{k}]({corpus}-{_slug(k)}.png)" for k, _ in entries), ""]
    t = rep["timing"]
    lines += ["## Timing (wall clock, this machine)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in t.items()]
    lines += ["", "Seconds summed over the fold tasks, which run in parallel (select = inner CV, fit = outer fit, "
              "predict = normalisation simulation + inference):", "", "| protocol | model | select | fit | predict |",
              "|---|---|---|---|---|"]
    for corpus, p in rep["protocols"].items():
        for key, r in p["results"].items():
            cs = r["cpu_s"]
            lines.append(f"| {corpus} | {key} | {cs['select']:.1f} | {cs['fit']:.1f} | {cs['predict']:.1f} |")
        if "seed_baseline" in p:
            lines.append(f"| {corpus} | seed | - | {p['seed_baseline']['cpu_s']['fit']:.1f} | - |")
    lines.append("")
    return "\n".join(lines)


def complete_report(rep: dict, framing, vad_params) -> dict:
    """Add provenance to an ``evaluate()`` result."""
    from dataclasses import asdict

    rep = dict(rep)
    rep.update({"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": git_commit(),
                "spec_hash": features.SPEC_HASH, "n_features": features.N_FEATURES,
                "framing": {"window_s": framing.window_s, "hop_s": framing.hop_s, "sample_rate": framing.sample_rate},
                "vad": asdict(vad_params)})
    return rep


def write_report(rep: dict, out_dir: Path) -> Path:
    """Writes report.md, report.json and the PNGs; returns the folder."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for corpus, p in rep["protocols"].items():
        entries = [(k, r["utterance"]) for k, r in p["results"].items()]
        if "seed_baseline" in p:
            entries.append(("seed", p["seed_baseline"]["utterance"]))
        for k, u in entries:
            plot_confusion(u["confusion"], p["labels"], f"{corpus} {k}: utterance UA {_pct(u['ua'])} %",
                           out_dir / f"{corpus}-{_slug(k)}.png")
    (out_dir / REPORT_JSON).write_text(json.dumps(rep, indent=1), encoding="utf-8")
    (out_dir / REPORT_MD).write_text(render_markdown(rep), encoding="utf-8")
    return out_dir


def read_report(path: Path) -> dict:
    """A report written by ``write_report`` (its folder or its JSON file)."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_JSON
    try:
        rep = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"evaluation report {path} not found; run `python -m train evaluate` first or omit "
                        "--report") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"evaluation report {path} is not readable JSON ({e})") from None
    if not isinstance(rep, dict) or "protocols" not in rep:
        raise DataError(f"{path} is not an evaluation report (no 'protocols')")
    return rep
