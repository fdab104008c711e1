"""The network outputs of ``listen`` (issue 11): built once from the command line, fed every event.

``OutputsConfig.from_args`` reads ``--osc``, ``--osc-preset``, ``--osc-prefix``,
``--osc-face-blend``, ``--vmc-names``, ``--avatar-map``, ``--vts`` and ``--serve`` (bad values:
one-line ``ConfigError``, exit 2); ``build`` makes the outputs, each in its own thread behind a
bounded queue (``runner.OutputThread``), and ``Outputs.publish`` offers each event to all of
them without ever waiting. A ``status`` event gets an ``outputs`` object first (per output: sent,
errors, dropped), so drops show on stdout too.

Safety: each output sends only to the address given; the defaults are loopback; nothing listens
unless ``--serve`` asks, and ``--serve`` on a non-loopback address prints a warning.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO
from urllib.parse import urlsplit

from .errors import ConfigError

if TYPE_CHECKING:  # for annotations only (the outputs load lazily)
    from .avatar_map import AvatarMap
    from .runner import OutputThread
    from .sinks.base import Output

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_VTS_URL = "ws://127.0.0.1:8001"
DEFAULT_SERVE = f"{LOOPBACK}:8765"
PORT_MAX = 65535
VMC_NAME_CHOICES = ("vrm0", "vrm1")
OSC_PRESETS = ("vrchat", "vmc", "raw")
OSC_DEFAULT_PORTS = {"vrchat": 9000, "vmc": 39539, "raw": 9000}


def parse_host_port(text: str, *, flag: str, default_port: int | None, allow_zero: bool = False) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT``, ``HOST`` (with a default port), ``[v6]:PORT`` -> (host, port)."""
    text = text.strip()
    host, port_text = LOOPBACK, ""
    if text.startswith("["):  # [::1]:9000
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.isdigit() or text == "":
        port_text = text
    else:
        host = text
    host = host or LOOPBACK
    if port_text == "":
        if default_port is None:
            raise ConfigError(f"{flag} {text!r}: no port; give [HOST:]PORT")
        return host, default_port
    if not port_text.isdigit() or not (0 if allow_zero else 1) <= int(port_text) <= PORT_MAX:
        raise ConfigError(f"{flag} {text!r}: the port must be a number from {0 if allow_zero else 1} to {PORT_MAX}; "
                          f"give [HOST:]PORT")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class OutputsConfig:
    osc: tuple[str, int] | None = None
    osc_preset: str = "vrchat"
    osc_face_blend: bool = False
    vmc_names: str = "vrm0"
    avatar_map: AvatarMap | None = None
    vts_url: str | None = None
    serve: tuple[str, int] | None = None

    @property
    def any(self) -> bool:
        return self.osc is not None or self.vts_url is not None or self.serve is not None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OutputsConfig:
        from . import avatar_map

        amap = avatar_map.load(getattr(args, "avatar_map", None))
        prefix = getattr(args, "osc_prefix", None)
        if prefix is not None:
            if not avatar_map.VRCHAT_NAME_RE.match(prefix) and prefix != "":
                raise ConfigError(f"--osc-prefix {prefix!r}: use letters, digits, _ . / - only")
            from dataclasses import replace

            amap = replace(amap, vrchat_prefix=prefix)
        preset = getattr(args, "osc_preset", "vrchat") or "vrchat"
        osc = None
        if getattr(args, "osc", None) is not None:
            osc = parse_host_port(args.osc, flag="--osc", default_port=OSC_DEFAULT_PORTS[preset])
        vts = getattr(args, "vts", None)
        if vts is not None:
            parts = urlsplit(vts)
            if parts.scheme not in ("ws", "wss") or not parts.hostname:
                raise ConfigError(f"--vts {vts!r}: not a WebSocket URL; give ws://HOST:PORT "
                                  f"(VTube Studio's default is {DEFAULT_VTS_URL})")
        serve = None
        if getattr(args, "serve", None) is not None:
            serve = parse_host_port(args.serve, flag="--serve", default_port=int(DEFAULT_SERVE.split(":")[1]),
                                    allow_zero=True)
        return cls(osc=osc, osc_preset=preset, osc_face_blend=bool(getattr(args, "osc_face_blend", False)),
                   vmc_names=getattr(args, "vmc_names", "vrm0") or "vrm0", avatar_map=amap, vts_url=vts,
                   serve=serve)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The one block of ``listen`` flags for the outputs."""
    g = p.add_argument_group("avatar outputs (docs/avatars.md)")
    g.add_argument("--osc", nargs="?", const="", metavar="[HOST:]PORT",
                   help="send OSC over UDP (default host 127.0.0.1; default port by preset: "
                        + ", ".join(f"{k} {v}" for k, v in OSC_DEFAULT_PORTS.items()) + ")")
    g.add_argument("--osc-preset", choices=OSC_PRESETS, default="vrchat",
                   help="vrchat: /avatar/parameters/<prefix>/...; vmc: VMC protocol blendshapes (VSeeFace, "
                        "Warudo, VNyan); raw: /realtime_ser/<field> (default vrchat)")
    g.add_argument("--osc-prefix", metavar="NAME", help="VRChat parameter prefix (default RealtimeSER; '' for none)")
    g.add_argument("--osc-face-blend", action="store_true",
                   help="vrchat: also drive VRCFaceBlendH/VRCFaceBlendV from valence/arousal")
    g.add_argument("--vmc-names", choices=VMC_NAME_CHOICES, default="vrm0",
                   help="vmc: VRM 0.x blendshape names (Joy, Angry, Sorrow, Fun, Neutral) or VRM 1.0 "
                        "(happy, angry, sad, relaxed, surprised, neutral) (default vrm0)")
    g.add_argument("--avatar-map", metavar="FILE", help="TOML or JSON file renaming parameters and mapping labels "
                   "to blendshapes with gains")
    g.add_argument("--vts", nargs="?", const=DEFAULT_VTS_URL, metavar="URL",
                   help=f"drive VTube Studio through its plugin API (default {DEFAULT_VTS_URL})")
    g.add_argument("--serve", nargs="?", const=DEFAULT_SERVE, metavar="[HOST:]PORT",
                   help=f"serve /events (WebSocket) and an overlay page / (default {DEFAULT_SERVE}; "
                        "port 0 picks a free one)")


class Outputs:
    """The running outputs. ``publish`` never blocks; ``close`` gives them a moment to finish."""

    def __init__(self, threads: Sequence[OutputThread]) -> None:
        self.threads = list(threads)

    def __bool__(self) -> bool:
        return bool(self.threads)

    def stats(self) -> dict:
        return {t.output.name: t.stats() for t in self.threads}

    def publish(self, event: dict) -> None:
        if not self.threads:
            return
        if event.get("type") == "status":
            event["outputs"] = self.stats()
        for t in self.threads:
            t.offer(event)

    def close(self) -> None:
        for t in self.threads:
            t.close()


class EventSink(Protocol):
    def write(self, event: dict) -> None: ...


class TeeSink:
    """The stdout sink with the outputs in front: each event is offered to every output (which may add
    the ``outputs`` counters to a status event), then written; the ``end`` event closes the outputs."""

    def __init__(self, inner: EventSink, outputs: Outputs) -> None:
        self.inner = inner
        self.outputs = outputs

    def write(self, event: dict) -> None:
        self.outputs.publish(event)
        try:
            self.inner.write(event)
        finally:
            if event.get("type") == "end":
                self.outputs.close()


def outputs_for(args: argparse.Namespace, labels: Sequence[str]) -> Outputs:
    """The outputs the command line asks for, started (empty when none): put them in front of the
    stdout sink with ``TeeSink(lines, outputs)``."""
    return build(OutputsConfig.from_args(args), labels)


def build(config: OutputsConfig, labels: Sequence[str], stderr: TextIO | None = None) -> Outputs:
    """Check the avatar map against the model, make and start every output the config asks for."""
    if not config.any:
        return Outputs([])
    from .runner import OutputThread

    stderr = stderr if stderr is not None else sys.stderr
    amap = config.avatar_map
    if amap is None:
        from .avatar_map import AvatarMap

        amap = AvatarMap()
    amap.check(labels)
    outputs: list[Output] = []
    if config.osc is not None:
        from .sinks import osc

        host, port = config.osc
        outputs.append(osc.make(config.osc_preset, host=host, port=port, labels=labels, avatar_map=amap,
                                face_blend=config.osc_face_blend, vmc_names=config.vmc_names))
    if config.vts_url is not None:
        from .sinks import vts

        outputs.append(vts.VTubeStudioOutput(url=config.vts_url, labels=labels, avatar_map=amap))
    if config.serve is not None:
        from .sinks import serve

        host, port = config.serve
        server = serve.ServeOutput(host=host, port=port)  # binds now: a busy port is a usage error
        if not is_loopback(host):
            log.warning("--serve %s: listening on a non-loopback address, anyone on the network can read the "
                        "emotion stream; use 127.0.0.1 unless you mean it", host)
        stderr.write(f"realtime-ser: serving {server.url} (overlay: {server.url}?overlay=1, "
                     f"events: {server.ws_url})\n")
        stderr.flush()
        outputs.append(server)
    threads = [OutputThread(output=o) for o in outputs]
    for t in threads:
        t.start()
    return Outputs(threads)
