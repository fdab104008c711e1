"""Which event values drive which avatar parameters: names, blendshapes and gains (issue 11).

The defaults work without a file; ``--avatar-map FILE`` (TOML, or JSON when the name ends in
``.json``) overrides any part of them. Every error is one line naming the file and the key
(a ``ConfigError``: exit code 2). The reference, with an example, is docs/avatars.md.

Tables (also in docs/avatars.md):

* ``EMOTION_INDEX``: the VRChat ``Emotion`` int of each label; 0 is silence; labels not listed
  get 10, 11, ... in the model's label order.
* ``VRM0_BLENDSHAPES`` / ``VRM1_BLENDSHAPES``: blendshape -> {label: gain}; a blendshape's
  target weight is ``min(1, sum(gain * smoothed probability))`` while speaking, 0 in silence.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

SILENCE = "silence"
EMOTION_INDEX: Mapping[str, int] = {
    SILENCE: 0, "neutral": 1, "calm": 2, "happy": 3, "sad": 4, "angry": 5, "fearful": 6, "disgust": 7,
    "surprised": 8, "boredom": 9,
}
FIRST_EXTRA_INDEX = 10  # labels of another model that are not in EMOTION_INDEX
VRCHAT_INT_MAX = 255  # a VRChat int parameter holds 0..255

VRM0_BLENDSHAPES: Mapping[str, Mapping[str, float]] = {
    "Joy": {"happy": 1.0},
    "Angry": {"angry": 1.0, "disgust": 0.5},
    "Sorrow": {"sad": 1.0, "fearful": 0.5, "boredom": 0.5},
    "Fun": {"calm": 1.0},
    "Neutral": {"neutral": 1.0},
}
VRM1_BLENDSHAPES: Mapping[str, Mapping[str, float]] = {
    "happy": {"happy": 1.0},
    "angry": {"angry": 1.0, "disgust": 0.5},
    "sad": {"sad": 1.0, "fearful": 0.5, "boredom": 0.5},
    "relaxed": {"calm": 1.0},
    "surprised": {"surprised": 1.0},
    "neutral": {"neutral": 1.0},
}
VMC_NAME_SETS = {"vrm0": VRM0_BLENDSHAPES, "vrm1": VRM1_BLENDSHAPES}

DEFAULT_PREFIX = "RealtimeSER"
DEFAULT_ATTACK_S = 0.25  # seconds for a blendshape to rise from 0 to 1
DEFAULT_RELEASE_S = 0.5  # seconds to fall from 1 to 0 (and to decay to neutral in silence)
MAX_RAMP_S = 10.0
MAX_GAIN = 10.0
FIELDS = ("Emotion", "Valence", "Arousal", "Speech", "Confidence")  # besides one per label

VRCHAT_NAME_RE = re.compile(r"^[A-Za-z0-9_./-]{1,64}$")
VTS_NAME_RE = re.compile(r"^[A-Za-z0-9]{4,32}$")  # VTube Studio: alphanumeric, 4 to 32 characters
VTS_PREFIX_RE = re.compile(r"^[A-Za-z0-9]{0,24}$")

SECTIONS = {"vrchat": {"prefix", "names", "emotion_index"},
            "vmc": {"attack_s", "release_s", "blendshapes"},
            "vts": {"prefix", "names"}}


def field_name(label: str) -> str:
    """The parameter name of a label's float: ``happy`` -> ``Happy``."""
    return label[:1].upper() + label[1:]


@dataclass(frozen=True, kw_only=True)
class AvatarMap:
    source: str = "defaults"
    vrchat_prefix: str = DEFAULT_PREFIX
    vrchat_names: Mapping[str, str] = field(default_factory=dict)  # field or label -> parameter name
    emotion_index: Mapping[str, int] = field(default_factory=dict)  # overrides of EMOTION_INDEX
    blendshapes: Mapping[str, Mapping[str, float]] | None = None  # None: by --vmc-names
    attack_s: float = DEFAULT_ATTACK_S
    release_s: float = DEFAULT_RELEASE_S
    vts_prefix: str = DEFAULT_PREFIX
    vts_names: Mapping[str, str] = field(default_factory=dict)

    # -------------------------------------------------------------- lookups
    def emotion_table(self, labels: Sequence[str]) -> dict[str, int]:
        table = {SILENCE: 0}
        extra = FIRST_EXTRA_INDEX
        for label in labels:
            given = self.emotion_index.get(label, self.emotion_index.get(field_name(label)))
            if given is not None:
                table[label] = given
            elif label in EMOTION_INDEX:
                table[label] = EMOTION_INDEX[label]
            else:
                table[label] = extra
                extra += 1
        return table

    def vrchat_parameter(self, key: str) -> str:
        """``key`` is one of ``FIELDS`` or a label; the full OSC address's parameter part."""
        name = _lookup(self.vrchat_names, key, field_name(key))
        return f"{self.vrchat_prefix}/{name}" if self.vrchat_prefix else name

    def vmc_blendshapes(self, names: str) -> Mapping[str, Mapping[str, float]]:
        return self.blendshapes if self.blendshapes is not None else VMC_NAME_SETS[names]

    def vts_parameter(self, key: str) -> str:
        return _lookup(self.vts_names, key, self.vts_prefix + field_name(key))

    # -------------------------------------------------------------- checks against the model
    def check(self, labels: Sequence[str]) -> None:
        """Labels named in the map must be the model's; names must be unique and valid."""
        known = set(labels) | {field_name(label) for label in labels}
        where = f"avatar map {self.source}"
        for shape, gains in (self.blendshapes or {}).items():
            for label in gains:
                if label not in known:
                    raise ConfigError(f"{where}: [vmc.blendshapes] {shape} uses '{label}', which is not a label of "
                                      f"the model; use one of {', '.join(labels)}")
        for section, mapping in (("vrchat.names", self.vrchat_names), ("vts.names", self.vts_names),
                                 ("vrchat.emotion_index", self.emotion_index)):
            for key in mapping:
                if key not in known and (key not in FIELDS or section == "vrchat.emotion_index"):
                    raise ConfigError(f"{where}: [{section}] '{key}' is neither a label of the model nor one of "
                                      f"{', '.join(FIELDS)}; use one of {', '.join(list(labels) + list(FIELDS))}")
        keys = list(labels) + list(FIELDS)
        vrc = [self.vrchat_parameter(k) for k in keys]
        vts = [self.vts_parameter(k) for k in keys if k not in ("Emotion", "Speech", "Confidence")]
        for what, names in (("VRChat parameter", vrc), ("VTube Studio parameter", vts)):
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ConfigError(f"{where}: two values share the {what} name {dup[0]}; give each its own name")
        for name in vts:
            if not VTS_NAME_RE.match(name):
                raise ConfigError(f"{where}: VTube Studio parameter name '{name}' is invalid; VTube Studio needs "
                                  f"4 to 32 letters or digits (set [vts] prefix or [vts.names])")
        indices = self.emotion_table(labels)
        values = [v for k, v in indices.items() if k != SILENCE]
        if len(set(values)) != len(values) or 0 in values:
            raise ConfigError(f"{where}: [vrchat.emotion_index] gives two emotions the same number (or 0, which is "
                              f"silence); give each label its own number 1..{VRCHAT_INT_MAX}")


def _lookup(names: Mapping[str, str], key: str, default: str) -> str:
    """A name given for the label (``happy``) or for its parameter name (``Happy``)."""
    return names.get(key, names.get(field_name(key), default))


# ------------------------------------------------------------------ loading


def load(path: str | Path | None) -> AvatarMap:
    """The defaults, or the defaults overridden by the file at ``path``."""
    if path is None:
        return AvatarMap()
    p = Path(path)
    where = f"avatar map {p}"
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read it ({e.strerror or e}); give an existing TOML or JSON file") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            try:
                import tomllib
            except ImportError:  # Python 3.10
                raise ConfigError(f"{where}: reading TOML needs Python 3.11 or later; write the map as JSON "
                                  f"(a file ending in .json)") from None
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{where}: not valid {kind} ({message}); fix the syntax (docs/avatars.md has an example)") \
            from None
    return from_dict(data, source=str(p))


def from_dict(data: Any, *, source: str) -> AvatarMap:
    where = f"avatar map {source}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a table of sections; use {', '.join(SECTIONS)}")
    kwargs: dict[str, Any] = {"source": source}
    for section, body in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{where}: unknown section [{section}]; use {', '.join(SECTIONS)}")
        if not isinstance(body, dict):
            raise ConfigError(f"{where}: [{section}] must be a table")
        for key in body:
            if key not in SECTIONS[section]:
                raise ConfigError(f"{where}: unknown key '{key}' in [{section}]; use "
                                  f"{', '.join(sorted(SECTIONS[section]))}")
        ctx = f"{where}: [{section}]"
        if section in ("vrchat", "vts"):
            if "prefix" in body:
                pattern = VRCHAT_NAME_RE if section == "vrchat" else VTS_PREFIX_RE
                kwargs[f"{section}_prefix"] = _string(body["prefix"], f"{ctx} prefix", pattern, allow_empty=True)
            if "names" in body:
                pattern = VRCHAT_NAME_RE if section == "vrchat" else VTS_NAME_RE
                kwargs[f"{section}_names"] = {str(k): _string(v, f"{ctx} names.{k}", pattern)
                                              for k, v in _table(body["names"], f"{ctx} names").items()}
        if section == "vrchat" and "emotion_index" in body:
            kwargs["emotion_index"] = {str(k): _int(v, f"{ctx} emotion_index.{k}", 1, VRCHAT_INT_MAX)
                                       for k, v in _table(body["emotion_index"], f"{ctx} emotion_index").items()}
        if section == "vmc":
            for key in ("attack_s", "release_s"):
                if key in body:
                    kwargs[key] = _number(body[key], f"{ctx} {key}", 0.0, MAX_RAMP_S)
            if "blendshapes" in body:
                shapes = {}
                for shape, gains in _table(body["blendshapes"], f"{ctx} blendshapes").items():
                    gains = _table(gains, f"{ctx} blendshapes.{shape}")
                    shapes[str(shape)] = {str(label): _number(g, f"{ctx} blendshapes.{shape}.{label}", 0.0, MAX_GAIN)
                                          for label, g in gains.items()}
                if not shapes:
                    raise ConfigError(f"{ctx} blendshapes is empty; map at least one blendshape to a label")
                kwargs["blendshapes"] = shapes
    return AvatarMap(**kwargs)


def _table(value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a table (name = value pairs), got {type(value).__name__}")
    return value


def _string(value: Any, what: str, pattern: re.Pattern, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or not (pattern.match(value) or (allow_empty and value == "")):
        raise ConfigError(f"{what} = {value!r} is not a valid name; use letters and digits (pattern {pattern.pattern})")
    return value


def _number(value: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise ConfigError(f"{what} = {value!r} must be a number from {lo:g} to {hi:g}")
    return float(value)


def _int(value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{what} = {value!r} must be a whole number from {lo} to {hi}")
    return value
