"""OSC outputs (python-osc over UDP): presets ``vrchat``, ``vmc`` and ``raw`` (issue 11).

Each runs in its own thread (``runner.OutputThread``) and sends only to the address given;
UDP never waits for the receiver, and a receiver that is down only shows as ``errors`` in the
status events' ``outputs`` counters.

* ``vrchat`` (port 9000): ``/avatar/parameters/<prefix>/<name>``: ``Emotion`` (int, the table in
  ``avatar_map.EMOTION_INDEX``; 0 = silence), one float 0..1 per label (smoothed probability),
  ``Valence``/``Arousal`` (-1..1), ``Speech`` (bool), ``Confidence`` (0..1); with
  ``face_blend`` also VRChat's ``VRCFaceBlendH``/``VRCFaceBlendV`` (valence, arousal). Sent on
  every hop while speaking and on every change, never more often than ``VRCHAT_MIN_INTERVAL_S``
  (VRChat syncs parameters about ten times a second): a faster burst is coalesced, the latest
  values always go out.
* ``vmc`` (port 39539): one bundle per update, ``/VMC/Ext/Blend/Val`` (name, weight) for every
  mapped blendshape, zeros included, then ``/VMC/Ext/Blend/Apply``. Weights move linearly towards
  their targets at most 1/attack_s per second up and 1/release_s down, drawn ``VMC_SEND_HZ`` times
  a second, so the face never snaps; in silence every weight decays to 0 (the neutral face).
* ``raw``: ``/realtime_ser/<field>`` for every field of every event (nested objects as
  ``/realtime_ser/<field>/<key>``), one bundle per event, ``/realtime_ser/type`` first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pythonosc import osc_bundle_builder, osc_message_builder
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.udp_client import SimpleUDPClient

from ..avatar_map import SILENCE, AvatarMap
from ..outputs import OSC_DEFAULT_PORTS, OSC_PRESETS
from .base import Output, clamp, plain

log = logging.getLogger(__name__)

PRESETS = OSC_PRESETS
DEFAULT_PORTS = OSC_DEFAULT_PORTS
VRCHAT_ROOT = "/avatar/parameters/"
VRCHAT_FACE_BLEND = ("VRCFaceBlendH", "VRCFaceBlendV")  # driven by valence, arousal
VRCHAT_MIN_INTERVAL_S = 0.1  # at most ~10 updates a second
VMC_SEND_HZ = 30.0
VMC_REFRESH_S = 1.0  # unchanged weights are re-sent this often (a receiver started late catches up)
VMC_VAL = "/VMC/Ext/Blend/Val"
VMC_APPLY = "/VMC/Ext/Blend/Apply"
RAW_ROOT = "/realtime_ser"
RAMP_EPSILON = 1e-9
EVENT_KINDS_WITH_STATE = ("prediction", "change")


class _UdpOutput(Output):
    name = "osc"

    def __init__(self, *, host: str, port: int) -> None:
        super().__init__()
        self.host = host
        self.port = port
        self._client: SimpleUDPClient | None = None

    def open(self) -> None:
        self._client = SimpleUDPClient(self.host, self.port)

    def _send(self, packet: OscMessage | OscBundle) -> None:
        if self._client is None:
            self.open()
        client = self._client
        assert client is not None  # open() made it
        try:
            client.send(packet)
            self.sent += 1
        except OSError as e:
            if self.errors == 0:
                log.info("OSC to %s:%d: %s (counted in status events)", self.host, self.port, e)
            self.errors += 1

    def _message(self, address: str, *args: Any) -> OscMessage:
        b = osc_message_builder.OscMessageBuilder(address=address)
        for a in args:
            b.add_arg(plain(a))
        return b.build()


# ------------------------------------------------------------------ VRChat


class VRChatOutput(_UdpOutput):
    def __init__(self, *, host: str, port: int, labels: Sequence[str], avatar_map: AvatarMap,
                 face_blend: bool = False, min_interval_s: float = VRCHAT_MIN_INTERVAL_S) -> None:
        super().__init__(host=host, port=port)
        self.labels = tuple(labels)
        self.map = avatar_map
        self.face_blend = face_blend
        self.min_interval_s = min_interval_s
        self.emotions = avatar_map.emotion_table(self.labels)
        self.addresses = {key: VRCHAT_ROOT + avatar_map.vrchat_parameter(key)
                          for key in ("Emotion", *self.labels, "Valence", "Arousal", "Speech", "Confidence")}
        self._speech = False
        self._pending: dict[str, Any] | None = None
        self._last_values: dict[str, Any] | None = None
        self._last_send = float("-inf")
        self.updates = 0  # sends of a whole parameter set

    def values(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The parameter set of one prediction/change event: address -> plain value."""
        emotion = event.get("emotion", SILENCE)
        probs = event.get("probabilities") or {}
        if isinstance(event.get("speech"), bool):
            self._speech = event["speech"]
        a = self.addresses
        out: dict[str, Any] = {a["Emotion"]: int(self.emotions.get(emotion, 0))}
        for label in self.labels:
            out[a[label]] = float(clamp(plain(probs.get(label, 0.0)) or 0.0, 0.0, 1.0))
        valence = float(clamp(plain(event.get("valence", 0.0)) or 0.0, -1.0, 1.0))
        arousal = float(clamp(plain(event.get("arousal", 0.0)) or 0.0, -1.0, 1.0))
        out[a["Valence"]] = valence
        out[a["Arousal"]] = arousal
        out[a["Speech"]] = bool(self._speech)
        out[a["Confidence"]] = float(clamp(plain(event.get("confidence")) or 0.0, 0.0, 1.0))
        if self.face_blend:
            out[VRCHAT_ROOT + VRCHAT_FACE_BLEND[0]] = valence
            out[VRCHAT_ROOT + VRCHAT_FACE_BLEND[1]] = arousal
        return out

    def handle(self, event: dict, now: float) -> None:
        kind = event.get("type")
        if kind not in EVENT_KINDS_WITH_STATE:
            return
        values = self.values(event)
        speaking = kind == "prediction" and event.get("speech") is True
        if speaking or kind == "change" or values != self._last_values:
            self._pending = values

    def tick(self, now: float) -> None:
        if self._pending is None or now - self._last_send < self.min_interval_s:
            return
        self._flush(now)

    def close(self) -> None:
        """The latest values still go out at the end, whatever the rate limit."""
        if self._pending is not None:
            self._flush(self._last_send + self.min_interval_s)

    def _flush(self, now: float) -> None:
        if self._pending is None:
            return
        for address, value in self._pending.items():
            self._send(self._message(address, value))
        self._last_values, self._pending = self._pending, None
        self._last_send = now
        self.updates += 1


# ------------------------------------------------------------------ VMC


class VMCOutput(_UdpOutput):
    tick_s = 1.0 / VMC_SEND_HZ

    def __init__(self, *, host: str, port: int, labels: Sequence[str], avatar_map: AvatarMap,
                 names: str = "vrm0") -> None:
        super().__init__(host=host, port=port)
        self.shapes = {shape: dict(gains) for shape, gains in avatar_map.vmc_blendshapes(names).items()}
        self.attack_s = avatar_map.attack_s
        self.release_s = avatar_map.release_s
        self.target = {shape: 0.0 for shape in self.shapes}
        self.weights = {shape: 0.0 for shape in self.shapes}
        self._last_tick: float | None = None
        self._last_send = float("-inf")
        self._dirty = True

    def targets(self, event: Mapping[str, Any]) -> dict[str, float]:
        probs = event.get("probabilities")
        if event.get("emotion", SILENCE) == SILENCE or not probs:
            return {shape: 0.0 for shape in self.shapes}  # silence: decay to the neutral face
        return {shape: clamp(sum(g * float(plain(probs.get(label, 0.0)) or 0.0) for label, g in gains.items()),
                             0.0, 1.0)
                for shape, gains in self.shapes.items()}

    def handle(self, event: dict, now: float) -> None:
        if event.get("type") in EVENT_KINDS_WITH_STATE:
            self.target = self.targets(event)

    def _step(self, current: float, target: float, dt: float) -> float:
        ramp_s = self.attack_s if target > current else self.release_s
        if ramp_s <= 0:
            return target
        step = dt / ramp_s
        return min(target, current + step) if target > current else max(target, current - step)

    def tick(self, now: float) -> None:
        dt = 0.0 if self._last_tick is None else max(0.0, now - self._last_tick)
        self._last_tick = now
        changed = False
        for shape, w in self.weights.items():
            new = self._step(w, self.target[shape], dt)
            if abs(new - w) > RAMP_EPSILON:
                changed = True
            self.weights[shape] = new
        if changed or self._dirty or now - self._last_send >= VMC_REFRESH_S:
            self._send(self.bundle())
            self._last_send = now
            self._dirty = False

    def bundle(self):
        b = osc_bundle_builder.OscBundleBuilder(osc_bundle_builder.IMMEDIATELY)
        for shape, w in self.weights.items():
            b.add_content(self._message(VMC_VAL, str(shape), float(w)))
        b.add_content(self._message(VMC_APPLY))
        return b.build()

    def close(self) -> None:
        """At the end the face goes back to neutral, with the release ramp (at most ``release_s``)."""
        self.target = {shape: 0.0 for shape in self.shapes}
        deadline = time.monotonic() + self.release_s
        while any(w > 0.0 for w in self.weights.values()) and time.monotonic() < deadline:
            time.sleep(self.tick_s)
            self.tick(time.monotonic())
        if any(w > 0.0 for w in self.weights.values()):
            self.weights = {shape: 0.0 for shape in self.shapes}
            self._send(self.bundle())


# ------------------------------------------------------------------ raw


def flatten(prefix: str, value: Any) -> list[tuple[str, list]]:
    """``(address, args)`` for one event field; nulls are left out (OSC 1.0 has no null)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        out: list[tuple[str, list]] = []
        for k, v in value.items():
            out += flatten(f"{prefix}/{k}", v)
        return out
    if isinstance(value, (list, tuple)):
        return [(prefix, [plain(v) for v in value if v is not None])]
    return [(prefix, [plain(value)])]


class RawOutput(_UdpOutput):
    def handle(self, event: dict, now: float) -> None:
        b = osc_bundle_builder.OscBundleBuilder(osc_bundle_builder.IMMEDIATELY)
        items = [("type", event.get("type"))] + [(k, v) for k, v in event.items() if k != "type"]
        for key, value in items:
            for address, args in flatten(f"{RAW_ROOT}/{key}", value):
                b.add_content(self._message(address, *args))
        self._send(b.build())


def make(preset: str, *, host: str, port: int, labels: Sequence[str], avatar_map: AvatarMap,
         face_blend: bool = False, vmc_names: str = "vrm0") -> Output:
    if preset == "vrchat":
        return VRChatOutput(host=host, port=port, labels=labels, avatar_map=avatar_map, face_blend=face_blend)
    if preset == "vmc":
        return VMCOutput(host=host, port=port, labels=labels, avatar_map=avatar_map, names=vmc_names)
    return RawOutput(host=host, port=port)
