"""OSC presets received by python-osc's own ThreadingOSCUDPServer on an ephemeral loopback port:
addresses, argument types and ranges, VMC bundles (every blendshape, zeros included, Apply last),
ramps that never snap, the silence decay, and the VRChat rate limit. No mocks."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pythonosc import dispatcher, osc_bundle, osc_message, osc_server

from realtime_ser.avatar_map import EMOTION_INDEX, VRM0_BLENDSHAPES, VRM1_BLENDSHAPES, AvatarMap
from realtime_ser.sinks.osc import VMC_APPLY, VMC_VAL, VMCOutput, VRChatOutput

from helpers import HIGH_F0, LOW_F0, voice, write_audio

TIMEOUT_S = 120
SETTLE_S = 0.3
LABELS = ("neutral", "happy", "sad")


class Recorder(dispatcher.Dispatcher):
    """Keeps every datagram, decoded by python-osc: a list of messages per datagram (a bundle's in order)."""

    def __init__(self) -> None:
        super().__init__()
        self.packets: list[tuple[float, bool, list[osc_message.OscMessage]]] = []
        self.lock = threading.Lock()

    def call_handlers_for_packet(self, data, client_address):
        if osc_bundle.OscBundle.dgram_is_bundle(data):
            b = osc_bundle.OscBundle(data)
            item = (time.monotonic(), True, [b.content(i) for i in range(b.num_contents)])
        else:
            item = (time.monotonic(), False, [osc_message.OscMessage(data)])
        with self.lock:
            self.packets.append(item)
        return []

    def messages(self) -> list[osc_message.OscMessage]:
        with self.lock:
            return [m for _, _, ms in self.packets for m in ms]

    def wait_quiet(self, at_least: int = 1, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        last = -1
        while time.monotonic() < deadline:
            n = len(self.packets)
            if n >= at_least and n == last:
                return
            last = n
            time.sleep(SETTLE_S)


@pytest.fixture
def receiver():
    rec = Recorder()
    server = osc_server.ThreadingOSCUDPServer(("127.0.0.1", 0), rec)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    rec.port = server.server_address[1]
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def sad_happy_wav(tmp_path_factory) -> Path:
    sr = 16_000
    x = np.concatenate([np.zeros(sr // 2, np.float32), voice(LOW_F0, 3.0), voice(HIGH_F0, 3.0, seed=1),
                        np.zeros(4 * sr, np.float32)])
    return write_audio(tmp_path_factory.mktemp("osc") / "sad_happy.wav", x)


def listen(model: Path, wav: Path, *args: str, pace: str = "fast") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "realtime_ser", "listen", "--replay", str(wav), "--pace", pace,
                           "--model", str(model), "--no-dashboard", "--status-every", "2", *args],
                          capture_output=True, text=True, timeout=TIMEOUT_S)


def events_of(stdout: str) -> list[dict]:
    import json

    return [json.loads(line) for line in stdout.splitlines()]


# ------------------------------------------------------------------ VRChat


@pytest.mark.slow
def test_vrchat_preset_addresses_types_and_ranges(receiver, tiny_model_path, sad_happy_wav):
    r = listen(tiny_model_path, sad_happy_wav, "--osc", f"127.0.0.1:{receiver.port}", "--osc-face-blend",
               pace="realtime")
    assert r.returncode == 0, r.stderr
    receiver.wait_quiet()
    msgs = receiver.messages()
    root = "/avatar/parameters/RealtimeSER/"
    expected = {root + n for n in ("Emotion", "Neutral", "Happy", "Sad", "Valence", "Arousal", "Speech",
                                   "Confidence")} | {"/avatar/parameters/VRCFaceBlendH",
                                                     "/avatar/parameters/VRCFaceBlendV"}
    assert {m.address for m in msgs} == expected
    for m in msgs:
        assert len(m.params) == 1, m.address
        v = m.params[0]
        name = m.address.rsplit("/", 1)[1]
        if name == "Emotion":
            assert type(v) is int and v in {0, EMOTION_INDEX["neutral"], EMOTION_INDEX["happy"], EMOTION_INDEX["sad"]}
        elif name == "Speech":
            assert type(v) is bool
        elif name in ("Valence", "Arousal", "VRCFaceBlendH", "VRCFaceBlendV"):
            assert type(v) is float and -1.0 <= v <= 1.0
        else:
            assert type(v) is float and 0.0 <= v <= 1.0, (m.address, v)
    emotions = [m.params[0] for m in msgs if m.address == root + "Emotion"]
    # the replay's smoothed emotions (sad, then happy, then silence) all reached the avatar, in order
    events = events_of(r.stdout)
    changes = [e["emotion"] for e in events if e["type"] == "change"]
    sent = [k for i, k in enumerate(emotions) if i == 0 or emotions[i - 1] != k]
    assert [e for e in sent if e != 0] == [EMOTION_INDEX[c] for c in changes if c != "silence"]
    assert emotions[-1] == 0  # ends in silence
    assert any(m.params[0] is True for m in msgs if m.address == root + "Speech")
    # status events report the output's counters
    status = [e for e in events if e["type"] == "status"]
    assert status and all(e["outputs"]["osc"]["dropped"] == 0 for e in status)
    assert status[-1]["outputs"]["osc"]["sent"] > 0


def test_vrchat_never_floods_and_the_latest_values_go_out(receiver):
    out = VRChatOutput(host="127.0.0.1", port=receiver.port, labels=LABELS, avatar_map=AvatarMap())
    out.open()
    t0 = 1000.0
    step = 0.02  # 50 events a second: five times VRChat's rate
    n = 50
    for i in range(n):
        p = i / (n - 1)
        event = {"type": "prediction", "emotion": "happy", "confidence": p, "speech": True,
                 "probabilities": {"neutral": 1 - p, "happy": p, "sad": 0.0}, "valence": 0.8 * p, "arousal": 0.5 * p}
        now = t0 + i * step
        out.handle(event, now)
        out.tick(now)
    out.close()
    receiver.wait_quiet()
    happy = [m.params[0] for m in receiver.messages() if m.address.endswith("/Happy")]
    wall = (n - 1) * step
    assert len(happy) == out.updates <= int(wall / 0.1) + 2  # at most ~10 Hz, plus the final values
    assert happy[-1] == pytest.approx(1.0)  # the last event's value was not lost to the rate limit
    assert happy == sorted(happy)


# ------------------------------------------------------------------ VMC


def vmc_bundles(receiver) -> list[dict[str, float]]:
    out = []
    for _, is_bundle, msgs in receiver.packets:
        assert is_bundle
        assert msgs[-1].address == VMC_APPLY and msgs[-1].params == []
        weights = {}
        for m in msgs[:-1]:
            assert m.address == VMC_VAL
            name, w = m.params
            assert type(name) is str and type(w) is float and 0.0 <= w <= 1.0
            weights[name] = w
        out.append(weights)
    return out


def test_vmc_bundles_ramp_and_decay_to_neutral_in_silence(receiver):
    amap = AvatarMap()
    out = VMCOutput(host="127.0.0.1", port=receiver.port, labels=LABELS, avatar_map=amap)
    out.open()
    dt = out.tick_s
    happy = {"type": "prediction", "emotion": "happy", "confidence": 0.9, "speech": True,
             "probabilities": {"neutral": 0.05, "happy": 0.9, "sad": 0.05}, "valence": 0.7, "arousal": 0.4}
    silence = {"type": "prediction", "emotion": "silence", "confidence": None, "speech": False,
               "probabilities": None, "valence": 0.0, "arousal": 0.0}
    now = 50.0
    script = [(happy, 1.5), (silence, 1.5)]
    for event, seconds in script:
        out.handle(event, now)
        for _ in range(int(seconds / dt)):
            out.tick(now)
            now += dt
    receiver.wait_quiet()
    bundles = vmc_bundles(receiver)
    # one bundle per tick while a weight moves (rise to 0.9, fall to 0), plus the 1 s refreshes
    assert len(bundles) >= int(0.9 * amap.attack_s / dt) + int(0.9 * amap.release_s / dt)
    for b in bundles:
        assert set(b) == set(VRM0_BLENDSHAPES)  # every blendshape in every bundle, zeros included
    joy = [b["Joy"] for b in bundles]
    assert max(joy) == pytest.approx(0.9)  # the target: gain 1 x p(happy)
    assert bundles[0]["Angry"] == 0.0 and bundles[0]["Sorrow"] == 0.0
    rise = dt / amap.attack_s + 1e-6
    fall = dt / amap.release_s + 1e-6
    for a, b in zip(bundles, bundles[1:], strict=False):
        for name in b:
            assert -fall <= b[name] - a[name] <= rise, (name, a[name], b[name])  # never snaps
    peak = joy.index(max(joy))
    assert peak >= int(0.9 * amap.attack_s / dt)  # it took the attack time to get there
    tail = joy[peak:]
    assert tail == sorted(tail, reverse=True) and tail[-1] == 0.0  # silence: decays to neutral
    assert all(v == 0.0 for v in bundles[-1].values())


@pytest.mark.slow
def test_vmc_vrm1_names_end_to_end(receiver, tiny_model_path, sad_happy_wav):
    r = listen(tiny_model_path, sad_happy_wav, "--osc", str(receiver.port), "--osc-preset", "vmc",
               "--vmc-names", "vrm1", pace="realtime")
    assert r.returncode == 0, r.stderr
    receiver.wait_quiet()
    bundles = vmc_bundles(receiver)
    assert bundles and all(set(b) == set(VRM1_BLENDSHAPES) for b in bundles)
    assert max(b["sad"] for b in bundles) > 0.3 and max(b["happy"] for b in bundles) > 0.3
    assert all(v == 0.0 for v in bundles[-1].values())  # back to neutral at the end


# ------------------------------------------------------------------ raw


def test_raw_preset_sends_every_field_of_every_event(receiver, tiny_model_path, sad_happy_wav):
    r = listen(tiny_model_path, sad_happy_wav, "--osc", f"127.0.0.1:{receiver.port}", "--osc-preset", "raw")
    assert r.returncode == 0, r.stderr
    events = events_of(r.stdout)
    receiver.wait_quiet(at_least=len(events))
    assert len(receiver.packets) == len(events)
    for event, (_, is_bundle, msgs) in zip(events, receiver.packets, strict=True):
        assert is_bundle
        got = {m.address: m.params for m in msgs}
        assert msgs[0].address == "/realtime_ser/type" and msgs[0].params == [event["type"]]
        for key, value in event.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    if v is not None and not isinstance(v, dict):
                        assert got[f"/realtime_ser/{key}/{k}"][0] == pytest.approx(v)
            elif isinstance(value, (bool, str)):
                assert got[f"/realtime_ser/{key}"] == [value]
            elif isinstance(value, (int, float)):
                assert got[f"/realtime_ser/{key}"][0] == pytest.approx(value, rel=1e-6)
                assert type(got[f"/realtime_ser/{key}"][0]) is type(value)
