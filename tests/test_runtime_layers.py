"""The architecture's dependency rules, read from the runtime modules' imports (ast, not grep)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "realtime_ser"
PURE = ["audio/windowing.py", "audio/convert.py", "vad.py", "normalize.py", "smoothing.py",
        "events.py", "errors.py"] + sorted(p.relative_to(PKG).as_posix() for p in (PKG / "features").glob("*.py"))
NOT_IN_PURE = {"threading", "queue", "multiprocessing", "concurrent", "asyncio", "sounddevice", "soundfile",
               "onnxruntime", "rich", "time"}
NEVER_IN_RUNTIME = {"train", "sklearn", "skl2onnx", "librosa", "pickle", "joblib"}
OFF_THE_RUNTIME_PATH = {"bench.py"}  # the developer benchmark times the seed (librosa + scikit-learn) lazily


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_threads_devices_or_runtimes(module):
    assert imported_roots(PKG / module) & NOT_IN_PURE == set()


def test_runtime_never_imports_training_code_or_pickle():
    for path in PKG.rglob("*.py"):
        if path.relative_to(PKG).as_posix() not in OFF_THE_RUNTIME_PATH:
            assert imported_roots(path) & NEVER_IN_RUNTIME == set(), path


def test_only_the_runner_starts_threads():
    starters = []
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Thread":
                starters.append(path.relative_to(PKG).as_posix())
    assert starters and set(starters) == {"runner.py"}


def test_sinks_only_format_and_write():
    for path in (PKG / "sinks").glob("*.py"):
        assert imported_roots(path) & {"threading", "queue", "onnxruntime", "sounddevice"} == set(), path
