"""What importing costs: ``--help`` loads no heavy module, importing the features selects no kernel.

Each check runs in a fresh interpreter (``sys.modules`` of this test process holds everything the
suite imported) and reads ``sys.modules`` after the command.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("sklearn", "librosa", "numba", "onnxruntime", "sounddevice", "rich", "realtime_ser.bench",
         "realtime_ser.train", "train")
SUBPROCESS_TIMEOUT_S = 60

PROBE = """
import contextlib, io, json, sys
from realtime_ser import cli
with contextlib.redirect_stdout(io.StringIO()):
    try:
        cli.main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)))
"""


def loaded_after(*argv: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True,
                         timeout=SUBPROCESS_TIMEOUT_S)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def heavy_in(modules: set[str]) -> set[str]:
    return {m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)}


@pytest.mark.parametrize("argv", [["--help"], ["listen", "--help"], ["predict", "--help"]])
def test_help_imports_nothing_heavy(argv):
    assert heavy_in(loaded_after(*argv)) == set()


def test_the_bench_is_imported_when_it_is_the_command():
    """The positive control: the probe does see a module that is loaded."""
    assert "realtime_ser.bench" in loaded_after("bench", "--help")


def test_the_help_lists_the_optional_commands_without_importing_them():
    out = subprocess.run([sys.executable, "-m", "realtime_ser", "--help"], capture_output=True, text=True,
                         check=True, timeout=SUBPROCESS_TIMEOUT_S).stdout
    for name in ("bench", "calibrate", "profiles"):
        assert f"    {name} " in out, out


def test_importing_the_features_selects_no_kernel():
    """Kernel selection (an environment read, maybe a warning) happens at the first feature call."""
    code = ("import sys, json\n"
            "from realtime_ser import features\n"
            "from realtime_ser.features import kernel\n"
            "before = kernel.selected.cache_info().currsize\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('realtime_ser._kernel'))\n"
            "features.extract(__import__('numpy').zeros(16000, 'float32'))\n"
            "print(json.dumps([before, loaded, kernel.selected.cache_info().currsize]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         timeout=SUBPROCESS_TIMEOUT_S)
    before, loaded, after = json.loads(out.stdout)
    assert before == 0 and loaded == [] and after == 1
