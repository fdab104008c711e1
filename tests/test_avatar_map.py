"""The avatar map (``--avatar-map``, TOML or JSON) and the output flags: defaults, overrides that reach
a real python-osc receiver, and one-line errors with exit code 2 for every kind of bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from realtime_ser import avatar_map
from realtime_ser.avatar_map import EMOTION_INDEX, AvatarMap
from realtime_ser.errors import ConfigError

from helpers import HIGH_F0, voice, write_audio
from test_osc import receiver, vmc_bundles  # noqa: F401 (the fixture)

TIMEOUT_S = 120
LABELS = ("neutral", "happy", "sad")
EXAMPLE_TOML = """
# docs/avatars.md's example
[vrchat]
prefix = "Me"

[vrchat.names]
Happy = "Joy"
Emotion = "Mood"

[vrchat.emotion_index]
happy = 12

[vmc]
attack_s = 0.1
release_s = 0.2

[vmc.blendshapes]
Smile = { happy = 0.5 }
Frown = { sad = 1.0, neutral = 0.2 }

[vts]
prefix = "Voice"
"""


@pytest.fixture(scope="module")
def happy_wav(tmp_path_factory) -> Path:
    x = np.concatenate([np.zeros(8000, np.float32), voice(HIGH_F0, 3.0), np.zeros(8000, np.float32)])
    return write_audio(tmp_path_factory.mktemp("map") / "happy.wav", x)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "realtime_ser", *args], capture_output=True, text=True,
                          timeout=TIMEOUT_S)


def test_defaults():
    m = AvatarMap()
    assert m.vrchat_parameter("Emotion") == "RealtimeSER/Emotion"
    assert m.vrchat_parameter("happy") == "RealtimeSER/Happy"
    assert m.vts_parameter("Valence") == "RealtimeSERValence"
    assert m.emotion_table(LABELS) == {"silence": 0, "neutral": 1, "happy": 3, "sad": 4}
    assert m.emotion_table(["joyful", "happy", "grumpy"]) == {"silence": 0, "joyful": 10, "happy": 3, "grumpy": 11}
    assert set(m.vmc_blendshapes("vrm0")) == {"Joy", "Angry", "Sorrow", "Fun", "Neutral"}
    assert set(m.vmc_blendshapes("vrm1")) == {"happy", "angry", "sad", "relaxed", "surprised", "neutral"}
    assert sorted(EMOTION_INDEX.values()) == list(range(len(EMOTION_INDEX)))  # a table without holes
    m.check(LABELS)


def test_toml_and_json_give_the_same_map(tmp_path):
    import tomllib

    toml = tmp_path / "map.toml"
    toml.write_text(EXAMPLE_TOML)
    js = tmp_path / "map.json"
    js.write_text(json.dumps(tomllib.loads(EXAMPLE_TOML)))
    a, b = avatar_map.load(toml), avatar_map.load(js)
    assert {k: v for k, v in vars(a).items() if k != "source"} == {k: v for k, v in vars(b).items() if k != "source"}
    assert a.vrchat_parameter("happy") == "Me/Joy" and a.vrchat_parameter("sad") == "Me/Sad"
    assert a.vrchat_parameter("Emotion") == "Me/Mood"
    assert a.emotion_table(LABELS)["happy"] == 12
    assert a.vmc_blendshapes("vrm1") == {"Smile": {"happy": 0.5}, "Frown": {"sad": 1.0, "neutral": 0.2}}
    assert a.vts_parameter("happy") == "VoiceHappy"
    a.check(LABELS)


@pytest.mark.parametrize("text, words", [
    ("[vrchat\nprefix = 1", ["not valid TOML"]),
    ("[face]\nx = 1", ["unknown section [face]"]),
    ("[vmc]\nattack = 1", ["unknown key 'attack' in [vmc]"]),
    ("[vmc]\nattack_s = -1", ["attack_s", "from 0 to 10"]),
    ("[vmc.blendshapes]\nJoy = { happy = \"lots\" }", ["blendshapes.Joy.happy"]),
    ("[vmc.blendshapes]\nJoy = 1", ["must be a table"]),
    ("[vrchat]\nprefix = \"has space\"", ["prefix", "not a valid name"]),
    ("[vts.names]\nhappy = \"x\"", ["vts", "not a valid name"]),
    ("[vrchat.emotion_index]\nhappy = 300", ["from 1 to 255"]),
])
def test_bad_files_are_one_line_errors(tmp_path, text, words):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        avatar_map.load(p)
    message = str(e.value)
    assert "\n" not in message and str(p) in message
    for w in words:
        assert w in message, message


@pytest.mark.parametrize("data, words", [
    ({"vmc": {"blendshapes": {"Joy": {"joy": 1.0}}}}, ["'joy'", "not a label of the model"]),
    ({"vrchat": {"names": {"Happy": "Same", "sad": "Same"}}}, ["share", "Same"]),
    ({"vrchat": {"emotion_index": {"happy": 4}}}, ["same number"]),
    ({"vts": {"prefix": ""}, "vrchat": {}}, ["VTube Studio parameter name 'Sad'"]),
])
def test_maps_checked_against_the_model(data, words):
    m = avatar_map.from_dict(data, source="x.toml")
    with pytest.raises(ConfigError) as e:
        m.check(LABELS)
    for w in words:
        assert w in str(e.value), str(e.value)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("flags, words", [
    (["--osc", "99999"], ["--osc", "port"]),
    (["--osc", "host:port"], ["--osc", "port"]),
    (["--vts", "http://127.0.0.1:8001"], ["--vts", "ws://"]),
    (["--avatar-map", "/nonexistent/map.toml"], ["cannot read"]),
    (["--osc-prefix", "a b"], ["--osc-prefix"]),
])
def test_bad_flags_exit_2_with_one_line(tiny_model_path, happy_wav, flags, words):
    r = cli("listen", "--replay", str(happy_wav), "--pace", "fast", "--model", str(tiny_model_path), *flags)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("realtime-ser: error: "), r.stderr
    for w in words:
        assert w in lines[0]


def test_busy_serve_port_is_a_usage_error(tiny_model_path, happy_wav):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = cli("listen", "--replay", str(happy_wav), "--pace", "fast", "--model", str(tiny_model_path),
                "--serve", f"127.0.0.1:{s.getsockname()[1]}")
    assert r.returncode == 2 and "cannot listen there" in r.stderr and r.stdout == ""


def test_non_loopback_serve_warns(tiny_model_path, happy_wav):
    r = cli("listen", "--replay", str(happy_wav), "--pace", "fast", "--model", str(tiny_model_path),
            "--serve", "0.0.0.0:0")
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "anyone on the network" in line]
    assert len(warnings) == 1
    r = cli("listen", "--replay", str(happy_wav), "--pace", "fast", "--model", str(tiny_model_path),
            "--serve", "127.0.0.1:0")
    assert "anyone on the network" not in r.stderr


def test_the_map_reaches_the_receiver(receiver, tiny_model_path, happy_wav, tmp_path):  # noqa: F811
    p = tmp_path / "map.toml"
    p.write_text(EXAMPLE_TOML)
    r = cli("listen", "--replay", str(happy_wav), "--pace", "realtime", "--model", str(tiny_model_path),
            "--no-dashboard", "--osc", str(receiver.port), "--avatar-map", str(p))
    assert r.returncode == 0, r.stderr
    receiver.wait_quiet()
    addresses = {m.address for m in receiver.messages()}
    assert "/avatar/parameters/Me/Joy" in addresses and "/avatar/parameters/Me/Mood" in addresses
    assert "/avatar/parameters/RealtimeSER/Happy" not in addresses
    moods = {m.params[0] for m in receiver.messages() if m.address.endswith("/Mood")}
    assert 12 in moods  # happy, renumbered by the map


def test_the_map_drives_vmc_blendshapes_with_gains(receiver, tiny_model_path, happy_wav, tmp_path):  # noqa: F811
    p = tmp_path / "map.toml"
    p.write_text(EXAMPLE_TOML)
    r = cli("listen", "--replay", str(happy_wav), "--pace", "realtime", "--model", str(tiny_model_path),
            "--no-dashboard", "--osc", str(receiver.port), "--osc-preset", "vmc", "--avatar-map", str(p))
    assert r.returncode == 0, r.stderr
    receiver.wait_quiet()
    bundles = vmc_bundles(receiver)
    assert bundles and all(set(b) == {"Smile", "Frown"} for b in bundles)
    events = [json.loads(line) for line in r.stdout.splitlines()]
    p_happy = max((e["probabilities"] or {}).get("happy", 0.0) for e in events if e["type"] == "prediction")
    assert max(b["Smile"] for b in bundles) == pytest.approx(0.5 * p_happy, abs=0.02)  # gain 0.5
