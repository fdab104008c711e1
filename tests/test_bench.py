"""``realtime-ser bench``: runs end to end on short generated audio and reports every figure.

No wall-clock threshold is asserted here: the figures depend on the machine and its load.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from realtime_ser import bench

TIMEOUT_S = 600  # librosa's first use compiles with numba (about 20 s in a fresh environment)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_json(tiny_model_path) -> dict:
    r = subprocess.run([sys.executable, "-m", "realtime_ser", "bench", "--quick", "--json", "--model",
                        str(tiny_model_path)], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout  # one JSON object, nothing else on stdout
    return json.loads(lines[0])


@pytest.mark.slow
def test_quick_bench_reports_every_figure(quick_json):
    out = quick_json
    missing = [k for k in bench.REQUIRED_KEYS if k not in out]
    assert not missing, missing
    seed_available = all(importlib.util.find_spec(m) is not None for m in ("librosa", "sklearn"))
    for key in ("window_ms_median", "window_ms_p95", "replay_x_realtime", "cpu_percent_realtime", "first_event_s",
                "cold_start_help_s", "rss_peak_mb"):
        assert _positive(out[key]), (key, out[key])
    assert out["window_ms_p95"] >= out["window_ms_median"]
    if seed_available:
        assert _positive(out["seed_window_ms_median"]) and _positive(out["speedup_vs_seed"])
        assert out["speedup_vs_seed"] == pytest.approx(out["seed_window_ms_median"] / out["window_ms_median"])
    else:
        assert out["seed_window_ms_median"] is None and "not installed" in out["seed_note"]
    assert out["cpu_percent_realtime"] < 100 * out["machine"]["cores"]
    assert out["speech_share"] > 0.5  # the generated audio is speech-like: windows pass the speech gate
    assert _positive(out["gate_ms_median"]) and out["gate_ms_p95"] >= out["gate_ms_median"]
    assert out["gate_neural_share"] > 0.5  # the gate's network really ran on the speech windows
    assert "gate_ms_median" in out["how"]
    machine = out["machine"]
    assert machine["cpu"] and machine["cores"] >= 1 and machine["libraries"]["numpy"]
    assert machine["features"] in ("numpy", "kernel", "kernel_avx2")
    assert set(out["how"]) >= {"window_ms_median", "replay_x_realtime", "cpu_percent_realtime", "rss_peak_mb"}
    # the child's own peak (VmHWM), not ru_maxrss, which after fork + exec counts this process's pages too
    assert out["rss_from_vmhwm"] is True


def test_bench_table_and_bad_file(tiny_model_path, tmp_path):
    r = subprocess.run([sys.executable, "-m", "realtime_ser", "bench", "--quick", "--no-seed", "--no-subprocess",
                        "--model", str(tiny_model_path)], capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 0, r.stderr
    assert "window_ms_median" in r.stdout and "machine:" in r.stdout
    r = subprocess.run([sys.executable, "-m", "realtime_ser", "bench", "--file", str(tmp_path / "nope.wav")],
                       capture_output=True, text=True, timeout=TIMEOUT_S)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "nope.wav" in r.stderr


def test_speech_like_audio_passes_the_speech_gate():
    from realtime_ser import gate

    d = gate.clip_decisions(bench.speech_like(6.0), 32_000, 8_000)
    assert sum(r.speech for r in d[1:]) >= len(d) - 2  # all but the first (0.5 s of audio) and maybe one more
