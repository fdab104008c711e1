"""``python -m train evaluate|export|all``: speaker-independent evaluation report, model export."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from realtime_ser.errors import ConfigError, SerError

from . import recipes
from .data import PROTOCOL_CORPORA, REPO_ROOT, limit_speakers, load_folds, resolve_data_root
from .dataset import DEFAULT_CACHE_DIR

DEFAULT_REPORT_DIR = REPO_ROOT / "reports" / "evaluation"
DEFAULT_MODEL_DIR = REPO_ROOT / "models"
DEFAULT_EXPORT_RECIPE = "logreg_bal"  # best measured (reports/logreg_bal): RAVDESS UA 0.622, EmoDB 0.838
DEFAULT_EXPORT_NORM = "online_speaker"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise ConfigError(f"{message} (see python -m train --help)")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m train", description=__doc__)
    p.add_argument("command", choices=("evaluate", "export", "all"),
                   help="evaluate: report only; export: fit on all clips and write the model; all: both")
    p.add_argument("--data", help="data root with ravdess/, emodb/, protocols/ (default $REALTIME_SER_DATA or ../shared/data)")
    p.add_argument("--report", type=Path, default=DEFAULT_REPORT_DIR,
                   help=f"evaluation report folder: written by evaluate/all, read by export (default {DEFAULT_REPORT_DIR})")
    p.add_argument("--out", type=Path, default=DEFAULT_MODEL_DIR, help=f"model folder for export (default {DEFAULT_MODEL_DIR})")
    p.add_argument("--name", default="default", help="model file name stem (default: default)")
    p.add_argument("--recipe", type=_names, default=None,
                   help=f"comma-separated recipes to evaluate (default {','.join(recipes.DEFAULT_RECIPES)}); "
                        f"export uses the one given, else {DEFAULT_EXPORT_RECIPE}; known: {', '.join(recipes.RECIPES)}")
    p.add_argument("--norm", type=_names, default=None,
                   help=f"normalisation modes to evaluate (default all: {','.join(recipes.NORM_MODES)}); "
                        f"export uses the one given, else {DEFAULT_EXPORT_NORM}")
    p.add_argument("--corpora", type=_names, default=PROTOCOL_CORPORA, help=f"default {','.join(PROTOCOL_CORPORA)}")
    p.add_argument("--speakers", type=_positive_int, help="quick run: at most this many speakers per corpus")
    p.add_argument("--folds", type=_positive_int, help="quick run: evaluate only the first this many folds")
    p.add_argument("--no-seed", action="store_true", help="skip the seed baseline")
    p.add_argument("--jobs", type=_positive_int, default=2, help="worker processes (default 2)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE_DIR, help=f"feature cache folder (default {DEFAULT_CACHE_DIR})")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _run(args: argparse.Namespace) -> int:
    from .evaluate import EvalConfig, evaluate
    from .report import complete_report, read_report, write_report

    for c in args.corpora:
        if c not in PROTOCOL_CORPORA:
            raise ConfigError(f"unknown corpus {c!r}; choose from {', '.join(PROTOCOL_CORPORA)}")
    eval_recipes = args.recipe or recipes.DEFAULT_RECIPES
    eval_modes = args.norm or recipes.NORM_MODES
    for r in eval_recipes:
        recipes.get_recipe(r)
    for m in eval_modes:
        recipes.check_norm_mode(m)
    if args.command == "export" and ((args.recipe and len(args.recipe) > 1) or (args.norm and len(args.norm) > 1)):
        raise ConfigError("export takes one --recipe and one --norm")
    export_recipe = args.recipe[0] if args.recipe and len(args.recipe) == 1 else DEFAULT_EXPORT_RECIPE
    export_mode = args.norm[0] if args.norm and len(args.norm) == 1 else DEFAULT_EXPORT_NORM
    if args.command == "all" and (export_recipe not in eval_recipes or export_mode not in eval_modes):
        raise ConfigError(f"all exports {export_recipe}/{export_mode}, which this run does not evaluate; include "
                          f"them in --recipe/--norm (or run evaluate, then export --recipe NAME --norm MODE)")
    root = resolve_data_root(args.data)
    t_start = time.perf_counter()
    report = None
    if args.command in ("evaluate", "all"):
        cfg = EvalConfig(data_root=root, recipes=tuple(eval_recipes), modes=tuple(eval_modes),
                         corpora=tuple(args.corpora), speakers=args.speakers, folds=args.folds, jobs=args.jobs,
                         cache_dir=args.cache, seed_baseline=not args.no_seed)
        from realtime_ser.vad import VadParams

        report = complete_report(evaluate(cfg), cfg.framing, VadParams())
        out = write_report(report, args.report)
        print(f"report: {out / 'report.md'}")
        for corpus, p in report["protocols"].items():
            seed = p.get("seed_baseline", {}).get("utterance", {}).get("ua")
            for key, r in p["results"].items():
                print(f"{corpus:8s} {key:22s} utterance UA {r['utterance']['ua']:.3f}  window UA {r['window']['ua']:.3f}"
                      + (f"  (seed {seed:.3f})" if seed is not None else ""))
    if args.command in ("export", "all"):
        from .export import export

        recipe, mode = export_recipe, export_mode
        if report is None:
            report = read_report(args.report)
        speakers = None
        if args.speakers:
            speakers = set()
            for c in args.corpora:
                speakers |= set(limit_speakers(load_folds(root, c), args.speakers))
        card = export(data_root=root, out_dir=args.out, recipe=recipe, mode=mode, report=report, name=args.name,
                      cache_dir=args.cache, jobs=args.jobs, speakers=speakers, corpora=tuple(args.corpora))
        print(f"model: {args.out / (args.name + '.onnx')} ({card['onnx_bytes']} bytes, {recipe}/{mode}, "
              f"{len(card['labels'])} labels); " +
              ", ".join(f"{p} UA {e['ua']:.3f}" for p, e in card["evaluation"].items()))
    print(f"done in {time.perf_counter() - t_start:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    from .dataset import limit_blas_threads

    limit_blas_threads()  # the export's fits run in this process; --jobs sets the parallelism
    try:
        return _run(args)
    except SerError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
