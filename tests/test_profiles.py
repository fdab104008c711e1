"""Profile files: refusals with one line and exit 4, the atomic save under SIGKILL, where they live."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from realtime_ser import features, profiles
from realtime_ser.errors import ConfigError, ModelError
from realtime_ser.normalize import (
    NormalizerParams,
    OnlineNormalizer,
    export_state,
    import_state,
    state_from_stats,
)

from helpers import cli_command, voice, write_audio


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(profiles.DATA_DIR_ENV, str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="module")
def talk(tmp_path_factory) -> Path:
    return write_audio(tmp_path_factory.mktemp("prof_audio") / "talk.wav", voice(150.0, 6.0))


def _good(model, name="me", speech_s=50.0) -> profiles.Profile:
    rng = np.random.default_rng(0)
    mean, var = rng.normal(size=features.N_FEATURES), rng.uniform(0.5, 2.0, size=features.N_FEATURES)
    return profiles.new(name, model, state_from_stats(model.normalizer, mean, var, 100), speech_s,
                        source="calibration", mapping="none")


@pytest.fixture(scope="module")
def norm_model(normalized_model_path):
    from realtime_ser.model import Model

    return Model.load(normalized_model_path)


def test_names_live_in_the_data_dir_and_paths_are_paths(data_dir, tmp_path):
    assert profiles.profile_path("alice") == data_dir / "profiles" / "alice.json"
    assert profiles.profile_path(str(tmp_path / "x.json")) == tmp_path / "x.json"
    assert profiles.profile_path("sub/dir/p") == Path("sub/dir/p")
    for bad in ("", "..", "a b", "-x", "x" * 65):
        with pytest.raises(ConfigError):
            profiles.profile_path(bad)


def test_normaliser_state_round_trip_and_warm_start(norm_model):
    params: NormalizerParams = norm_model.normalizer
    a = OnlineNormalizer(params)
    rng = np.random.default_rng(1)
    for x in rng.normal(size=(30, features.N_FEATURES)):
        a.update(x)
    b = OnlineNormalizer(params)
    import_state(b, json.loads(json.dumps(export_state(a))))
    x = rng.normal(size=features.N_FEATURES)
    assert np.array_equal(a.transform(x), b.transform(x)) and a.count == b.count and a.warmup == b.warmup
    a.update(x)
    b.update(x)
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.sq, b.sq)
    c = OnlineNormalizer(params)
    import_state(c, state_from_stats(params, np.zeros(features.N_FEATURES), np.ones(features.N_FEATURES), 90))
    assert c.warmup == 1.0 and c.count == params.prior_weight + 90
    with pytest.raises(ValueError):
        import_state(c, dict(export_state(a), mean=[0.0] * 3))
    with pytest.raises(ValueError):
        import_state(c, dict(export_state(a), count=float("nan")))


def _one_line_exit_4(args, env) -> str:
    r = subprocess.run(cli_command() + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 4, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("realtime-ser: error: profile "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    return lines[0]


def _variants(model, path: Path) -> dict[str, str]:
    good = _good(model, name=str(path)).to_json()
    text = json.dumps(good)
    other_hash = json.loads(text)
    other_hash["model"]["feature_spec_hash"] = "0123456789abcdef"
    other_labels = json.loads(text)
    other_labels["model"]["labels"] = ["neutral", "angry", "sad"]
    short_stats = json.loads(text)
    short_stats["normalizer"]["mean"] = short_stats["normalizer"]["mean"][:10]
    short_stats["normalizer"]["sq"] = short_stats["normalizer"]["sq"][:10]
    future = json.loads(text)
    future["version"] = 99
    return {"truncated": text[: len(text) // 2], "empty": "", "garbage": "\x00\x01 not json at all {",
            "binary": "\udcff", "not a profile": json.dumps({"hello": 1}), "a list": "[1, 2]",
            "missing normalizer": json.dumps({k: v for k, v in good.items() if k != "normalizer"}),
            "nan": text.replace(str(good["normalizer"]["mean"][0]), "NaN", 1),
            "other feature spec": json.dumps(other_hash), "other labels": json.dumps(other_labels),
            "wrong width": json.dumps(short_stats), "future version": json.dumps(future)}


@pytest.mark.slow
@pytest.mark.parametrize("command", ["listen", "predict"])
def test_bad_or_foreign_profiles_give_one_line_and_exit_4(command, norm_model, normalized_model_path, data_dir,
                                                          tmp_path, talk):
    env = dict(os.environ, REALTIME_SER_DATA_DIR=str(data_dir))
    for what, text in _variants(norm_model, tmp_path / "p.json").items():
        p = tmp_path / f"{what.replace(' ', '_')}.json"
        if text == "\udcff":
            p.write_bytes(b"\xff\xfe\x00garbage\x80")
        else:
            p.write_text(text, encoding="utf-8")
        args = ([command, "--replay", talk, "--pace", "fast"] if command == "listen" else [command, talk])
        line = _one_line_exit_4(args + ["--model", normalized_model_path, "--profile", p], env)
        assert str(p) in line, (what, line)
        if what.startswith("other"):
            assert "calibrate again" in line and "tiny_norm" in line
    missing = _one_line_exit_4(["predict", talk, "--model", normalized_model_path, "--profile", "nobody"], env)
    assert "not found" in missing and "realtime-ser calibrate --profile nobody" in missing


def test_the_shipped_model_refuses_a_profile_of_another_model(norm_model, data_dir, talk):
    profiles.save(_good(norm_model))
    env = dict(os.environ, REALTIME_SER_DATA_DIR=str(data_dir))
    line = _one_line_exit_4(["predict", talk, "--profile", "me"], env)
    assert "labels neutral,happy,sad" in line


SAVER = textwrap.dedent("""
    import json, sys
    from realtime_ser import profiles
    d = json.loads(open(sys.argv[1]).read())
    path = sys.argv[2]
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        p = profiles.parse(profiles.Path(path), json.dumps(d))
        p.path = profiles.Path(path)
        p.speech_s = float(i)
        p.normalizer["n_updates"] = i
        profiles.save(p)
""")


def test_atomic_save_survives_sigkill(norm_model, tmp_path):
    """A process saving the profile in a loop is killed at random moments: every time, the file
    that is there loads, whole, as one of the versions it wrote (never torn)."""
    target = tmp_path / "live.json"
    seed = tmp_path / "seed.json"
    good = _good(norm_model, name=str(target))
    seed.write_text(json.dumps(good.to_json()))
    profiles.save(good)
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    rng = random.Random(7)
    last = 0
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, str(script), str(seed), str(target)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.02, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        p = profiles.load(str(target), norm_model)  # raises on a torn file
        assert p.normalizer["n_updates"] == int(p.speech_s) and len(p.normalizer["mean"]) == features.N_FEATURES
        last = max(last, p.normalizer["n_updates"])
    assert last > 1, "the saver never completed a save: the kill times test nothing"
    assert [f.name for f in tmp_path.glob("*.json")] and profiles.load(str(target)).name


def test_listing_shows_unreadable_profiles_without_failing(norm_model, data_dir):
    profiles.save(_good(norm_model, name="ok"))
    (data_dir / "profiles" / "broken.json").write_text("{")
    rows = {r["name"]: r for r in profiles.list_profiles()}
    assert rows["ok"]["model"] == "tiny_norm" and rows["ok"]["speech_s"] == 50.0
    assert "error" in rows["broken"]


def test_save_into_an_unwritable_place_is_one_config_error(norm_model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = _good(norm_model, name=str(blocker / "sub" / "p.json"))
    with pytest.raises(ConfigError, match="cannot write profile"):
        profiles.save(p)


def test_a_model_without_normaliser_refuses_profiles(norm_model, tiny_model):
    assert tiny_model.labels == norm_model.labels and tiny_model.normalizer is None
    with pytest.raises(ModelError, match="no speaker normaliser"):
        _good(norm_model).check_model(tiny_model)
