"""calibrate -> profile -> listen/predict --profile, through the real CLI (generated audio only)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from helpers import cli_command, of_type, parse_lines, voice, write_audio


def _reading(seconds_of_voice: float, seed: int = 0) -> np.ndarray:
    """Phrases of a speech-like voice with pauses between them, like someone reading."""
    parts, t, i = [], 0.0, 0
    while t < seconds_of_voice:
        parts += [voice(130.0 + 7 * (i % 5), 4.0, seed=seed + i), np.zeros(8000, np.float32)]
        t += 4.0
        i += 1
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("calib_audio")
    return {"reading": write_audio(d / "reading.wav", _reading(64.0)),
            "short": write_audio(d / "short.wav", _reading(8.0, seed=50)),
            "talk": write_audio(d / "talk.wav", _reading(12.0, seed=100))}


@pytest.fixture
def env(tmp_path) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    e = dict(os.environ, REALTIME_SER_DATA_DIR=str(tmp_path / "data"), HOME=str(home),
             XDG_DATA_HOME=str(home / ".local" / "share"))
    return e


def run(args, env, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command() + [str(a) for a in args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def calibrate(audio, model, env, name="me") -> subprocess.CompletedProcess:
    return run(["calibrate", "--replay", audio["reading"], "--model", model, "--profile", name], env)


@pytest.mark.slow
def test_calibrate_from_a_recording_writes_a_profile_in_the_data_dir(audio, normalized_model_path, env):
    r = calibrate(audio, normalized_model_path, env)
    assert r.returncode == 0, r.stderr
    (line,) = parse_lines(r.stdout, "calibrate")
    path = Path(env["REALTIME_SER_DATA_DIR"]) / "profiles" / "me.json"
    assert line["type"] == "profile" and line["path"] == str(path) and line["model"] == "tiny_norm"
    assert 45.0 <= line["speech_s"] < 47.0  # stops once the default 45 s of speech are collected
    d = json.loads(path.read_text())
    assert d["format"] == "realtime-ser-profile" and d["version"] == 1
    assert d["model"]["labels"] == ["neutral", "happy", "sad"] and len(d["normalizer"]["mean"]) == 299
    assert d["normalizer"]["prior_share"] == 0.0
    assert "of speech" in r.stderr and str(path) in r.stderr  # progress lines without a terminal, and where
    # (onnxruntime keeps its own cache under ~/.cache; realtime-ser writes nothing under $HOME)
    assert not [p for p in Path(env["HOME"]).rglob("*") if "realtime" in str(p) or p.suffix == ".json"]


def test_calibrate_counts_only_speech(audio, normalized_model_path, env, tmp_path):
    noise = (0.05 * np.random.default_rng(0).standard_normal(16000 * 30)).astype(np.float32)
    silence_and_noise = np.concatenate([np.zeros(16000 * 30, np.float32), noise])
    f = write_audio(tmp_path / "quiet.wav", silence_and_noise)
    r = run(["calibrate", "--replay", f, "--model", normalized_model_path, "--profile", "q"], env)
    assert r.returncode == 3
    assert r.stderr.strip().splitlines()[-1].startswith("realtime-ser: error: ")
    assert "0.0 s of speech" in r.stderr
    assert not (Path(env["REALTIME_SER_DATA_DIR"]) / "profiles" / "q.json").exists()
    r = run(["calibrate", "--replay", audio["short"], "--model", normalized_model_path, "--profile", "s"], env)
    assert r.returncode == 3 and "holds only" in r.stderr


def _first_speech_warmup(stdout: str) -> float:
    preds = [e for e in of_type(parse_lines(stdout), "prediction") if e["speech"]]
    return preds[0]["normalizer_warmup"]


@pytest.mark.slow
def test_listen_with_a_profile_starts_warm_and_saves_only_when_asked(audio, normalized_model_path, env):
    assert calibrate(audio, normalized_model_path, env).returncode == 0
    path = Path(env["REALTIME_SER_DATA_DIR"]) / "profiles" / "me.json"
    before = path.read_bytes()
    base = ["listen", "--replay", audio["talk"], "--pace", "fast", "--model", normalized_model_path]
    cold = run(base, env)
    assert cold.returncode == 0 and _first_speech_warmup(cold.stdout) < 0.5
    fixed = run(base + ["--profile", "me", "--no-save-profile"], env)
    assert fixed.returncode == 0, fixed.stderr
    assert _first_speech_warmup(fixed.stdout) == 1.0
    assert path.read_bytes() == before  # --no-save-profile: unchanged
    again = run(base + ["--profile", "me", "--no-save-profile"], env)
    assert again.stdout == fixed.stdout  # the state changes between runs only when saved
    saved = run(base + ["--profile", "me"], env)
    assert saved.returncode == 0 and _first_speech_warmup(saved.stdout) == 1.0
    after = json.loads(path.read_text())
    assert after["speech_s"] > json.loads(before)["speech_s"]
    assert after["normalizer"]["n_updates"] > json.loads(before)["normalizer"]["n_updates"]
    third = run(base + ["--profile", "me", "--no-save-profile"], env)
    assert third.stdout != fixed.stdout  # starts from the saved, adapted statistics


def test_profiles_lists_name_created_speech_and_model(audio, normalized_model_path, env):
    assert calibrate(audio, normalized_model_path, env, name="alice").returncode == 0
    r = run(["profiles"], env)
    assert r.returncode == 0
    header, row = r.stdout.splitlines()[:2]
    assert header.split() == ["name", "created", "speech_s", "model"]
    name, created, speech, model = row.split()
    assert name == "alice" and created.endswith("Z") and float(speech) >= 45 and model == "tiny_norm"
    assert "delete" in r.stdout
    (j,) = parse_lines(run(["profiles", "--json"], env).stdout)
    assert j["name"] == "alice" and j["model"] == "tiny_norm"


@pytest.mark.slow
def test_predict_with_a_profile_and_same_speaker(audio, normalized_model_path, env):
    assert calibrate(audio, normalized_model_path, env).returncode == 0
    base = ["predict", audio["talk"], "--model", normalized_model_path]
    plain = parse_lines(run(base, env).stdout)[0]
    prof = parse_lines(run(base + ["--profile", "me"], env).stdout)[0]
    assert plain["speech_windows"] == prof["speech_windows"] > 0
    assert plain["probabilities"] != prof["probabilities"]
    same = run(["predict", audio["talk"], audio["short"], "--model", normalized_model_path, "--same-speaker"], env)
    assert same.returncode == 0, same.stderr
    lines = parse_lines(same.stdout)
    assert [x["file"] for x in lines] == [str(audio["talk"]), str(audio["short"])]
    assert lines[0]["probabilities"] != plain["probabilities"]
    both = run(base + ["--profile", "me", "--same-speaker"], env)
    assert both.returncode == 2 and len(both.stderr.strip().splitlines()) == 1


def test_python_api_profile(audio, normalized_model_path, env, monkeypatch):
    from realtime_ser import profiles
    from realtime_ser.api import Tracker, predict_file

    assert calibrate(audio, normalized_model_path, env).returncode == 0
    monkeypatch.setenv("REALTIME_SER_DATA_DIR", env["REALTIME_SER_DATA_DIR"])
    tracker = Tracker(model=normalized_model_path, profile="me")
    events = list(tracker.replay(audio["talk"]))
    speech = [e for e in events if e["type"] == "prediction" and e["speech"]]
    assert speech[0]["normalizer_warmup"] == 1.0
    before = profiles.load("me").normalizer["n_updates"]
    tracker.save_profile()
    assert profiles.load("me").normalizer["n_updates"] == before + len(speech)
    assert predict_file(audio["talk"], model=normalized_model_path, profile="me")["speech_windows"] == len(speech)


def test_calibrate_dashboard_shows_the_passage_and_a_progress_bar(audio, normalized_model_path, env):
    r = run(["calibrate", "--replay", audio["reading"], "--model", normalized_model_path, "--profile", "d",
             "--dashboard"], env)
    assert r.returncode == 0, r.stderr
    assert "rainbow" in r.stderr and "speech collected" in r.stderr and "45 / 45 s" in r.stderr
    assert parse_lines(r.stdout)[0]["name"] == "d"  # stdout stays JSON lines only
