"""list speaker profiles: name, created, seconds of speech, model (delete one by deleting its file)

Speaker profiles: one user's normaliser statistics, remembered between sessions.

A profile is a small versioned JSON file::

    {"format": "realtime-ser-profile", "version": 1, "name": "alice", "created": "...", "updated": "...",
     "model": {"name": "default", "feature_spec_hash": "...", "labels": [...]},
     "speech_s": 52.5,                      # seconds of speech the statistics were made from
     "source": "calibration" | "listen",    # what made it first
     "mapping": "population" | "none",      # the neutral reading mapped to all-emotion statistics?
     "normalizer": {"count", "mean", "sq", "n_updates", "prior_share"},   # realtime_ser.normalize.export_state
     "class_bias": null | [one value per label]}                         # personal examples (calibrate --emotions)

It lives in ``<user data dir>/profiles/NAME.json`` (platformdirs; ``$REALTIME_SER_DATA_DIR``
overrides the data dir) unless NAME is a path (holds a ``/`` or ends in ``.json``). A profile is
refused, with one line naming the fix, when it is not readable JSON, is truncated, or belongs to
another model (other feature-spec hash, label set or feature count): ``ModelError``, exit 4.
Saving is atomic: a temporary file in the same folder, fsync, ``os.replace``; a kill at any
moment leaves the old profile or the new one, never a torn file. Delete a profile by deleting
its file (``realtime-ser profiles`` prints the folder).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, ModelError

if TYPE_CHECKING:  # for annotations only
    from .core import ModelLike, StreamProcessor

FORMAT = "realtime-ser-profile"
VERSION = 1
DATA_DIR_ENV = "REALTIME_SER_DATA_DIR"
APP_NAME = "realtime-ser"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SUFFIX = ".json"


def data_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def profiles_dir() -> Path:
    return data_dir() / "profiles"


def is_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.endswith(SUFFIX)


def profile_path(name: str) -> Path:
    """Where profile NAME lives (``ConfigError`` for a name that is neither a path nor a plain name)."""
    if is_path(name):
        return Path(name).expanduser()
    if not NAME_RE.match(name):
        raise ConfigError(f"profile name {name!r} must be letters, digits, '.', '_' or '-' (at most 64), "
                          f"or a path ending in .json")
    return profiles_dir() / f"{name}{SUFFIX}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def model_identity(model: ModelLike) -> dict:
    from . import features

    card = getattr(model, "card", None) or {}
    spec_hash = (card.get("feature_spec") or {}).get("hash", features.SPEC_HASH)
    return {"name": model.name, "feature_spec_hash": spec_hash, "labels": list(model.labels)}


@dataclass
class Profile:
    name: str
    path: Path
    model: dict
    normalizer: dict
    speech_s: float = 0.0
    source: str = "calibration"
    mapping: str = "none"
    class_bias: list | None = None
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "name": self.name, "created": self.created,
                "updated": self.updated, "model": self.model, "speech_s": round(float(self.speech_s), 2),
                "source": self.source, "mapping": self.mapping, "normalizer": self.normalizer,
                "class_bias": self.class_bias}

    def check_model(self, model: ModelLike) -> None:
        """``ModelError`` unless this profile was made with ``model``'s features and labels."""
        mine, theirs = self.model, model_identity(model)
        what = None
        if mine.get("feature_spec_hash") != theirs["feature_spec_hash"]:
            what = f"feature spec {mine.get('feature_spec_hash')!r}, this model uses {theirs['feature_spec_hash']!r}"
        elif list(mine.get("labels") or []) != theirs["labels"]:
            what = f"labels {','.join(mine.get('labels') or [])}, this model has {','.join(theirs['labels'])}"
        if what is not None:
            raise ModelError(f"profile {self.path} was made for model {mine.get('name')!r} ({what}); "
                             f"calibrate again with this model (`realtime-ser calibrate --profile NAME`) "
                             f"or use the model it was made with")
        if model.normalizer is None:
            raise ModelError(f"model {model.name} has no speaker normaliser, so a profile cannot apply; "
                             f"use a model whose card has normalization type online_speaker")
        if len(self.normalizer.get("mean", [])) != len(model.normalizer.prior_mean):
            raise ModelError(f"profile {self.path} holds statistics of {len(self.normalizer.get('mean', []))} "
                             f"features, the model has {len(model.normalizer.prior_mean)}; calibrate again")
        if self.class_bias is not None and len(self.class_bias) != len(model.labels):
            raise ModelError(f"profile {self.path}: class_bias has {len(self.class_bias)} values for "
                             f"{len(model.labels)} labels; calibrate again")

    def apply(self, processor: StreamProcessor) -> None:
        """Start ``processor`` (a ``StreamProcessor``) from this profile's statistics."""
        from .normalize import import_state

        normalizer = processor.normalizer
        if normalizer is None:
            raise ModelError(f"profile {self.path}: the model has no normalizer to start from a profile")
        try:
            import_state(normalizer, self.normalizer)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"profile {self.path}: bad normalizer statistics ({e}); calibrate again") from None

    def absorb(self, processor: StreamProcessor, speech_s: float) -> None:
        """Take the processor's updated statistics (after a ``listen`` run)."""
        from .normalize import export_state

        normalizer = processor.normalizer
        if normalizer is None:
            raise ModelError(f"profile {self.path}: the model has no normalizer to adapt a profile")
        self.normalizer = export_state(normalizer)
        self.speech_s += speech_s
        self.updated = _now()


def _bad(path: Path, why: str) -> ModelError:
    return ModelError(f"profile {path} is {why}; delete it and calibrate again "
                      f"(`realtime-ser calibrate --profile NAME`)")


def parse(path: Path, text: str) -> Profile:
    try:
        d = json.loads(text)
    except json.JSONDecodeError:
        raise _bad(path, "not valid JSON (truncated or damaged)") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise _bad(path, "not a realtime-ser profile")
    if d.get("version") != VERSION:
        raise ModelError(f"profile {path} has format version {d.get('version')!r}, this realtime-ser reads "
                         f"{VERSION}; calibrate again or use the realtime-ser version that wrote it")
    try:
        norm = d["normalizer"]
        model = d["model"]
        ok = (isinstance(model, dict) and isinstance(norm, dict) and isinstance(norm["mean"], list)
              and isinstance(norm["sq"], list) and len(norm["mean"]) == len(norm["sq"])
              and all(isinstance(v, (int, float)) and math.isfinite(v) for v in norm["mean"] + norm["sq"])
              and isinstance(model.get("labels"), list))
        bias = d.get("class_bias")
        if bias is not None and not (isinstance(bias, list) and all(isinstance(v, (int, float)) for v in bias)):
            ok = False
        speech_s = float(d.get("speech_s", 0.0))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise _bad(path, "incomplete (missing or malformed model or normalizer fields)")
    return Profile(name=str(d.get("name", path.stem)), path=path, model=model, normalizer=norm, speech_s=speech_s,
                   source=str(d.get("source", "")), mapping=str(d.get("mapping", "none")), class_bias=bias,
                   created=str(d.get("created", "")), updated=str(d.get("updated", "")))


def load(name: str, model: ModelLike | None = None) -> Profile:
    """Profile NAME (checked against ``model`` if given); ``ModelError`` (exit 4) with the fix otherwise."""
    path = profile_path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        where = "" if is_path(name) else f" in {path.parent}"
        raise ModelError(f"profile {name!r} not found{where}; make it with `realtime-ser calibrate --profile "
                         f"{name}` or list them with `realtime-ser profiles`") from None
    except UnicodeDecodeError:
        raise _bad(path, "not text (garbage)") from None
    except OSError as e:
        raise ModelError(f"cannot read profile {path} ({e.strerror}); check its permissions") from None
    p = parse(path, text)
    if model is not None:
        p.check_model(model)
    return p


def save(profile: Profile) -> Path:
    """Atomic write: temporary file in the same folder, fsync, rename over the old one, fsync the folder."""
    path = profile.path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(profile.to_json(), indent=1) + "\n").encode("utf-8")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        try:
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    except OSError as e:
        raise ConfigError(f"cannot write profile {path} ({e.strerror}); check the folder's permissions "
                          f"or set ${DATA_DIR_ENV}") from None
    return path


def new(name: str, model: ModelLike, normalizer: dict, speech_s: float, source: str, mapping: str,
        class_bias: list | None = None) -> Profile:
    return Profile(name=Path(name).stem if is_path(name) else name, path=profile_path(name),
                   model=model_identity(model), normalizer=normalizer, speech_s=speech_s, source=source,
                   mapping=mapping, class_bias=class_bias)


def list_profiles() -> list[dict]:
    """Every profile in the profiles folder: name, created, speech_s, model (or the error)."""
    d = profiles_dir()
    out: list[dict] = []
    if not d.is_dir():
        return out
    for path in sorted(d.glob(f"*{SUFFIX}")):
        row: dict[str, Any] = {"name": path.stem, "path": str(path)}
        try:
            p = parse(path, path.read_text(encoding="utf-8"))
            row.update(created=p.created, updated=p.updated, speech_s=round(p.speech_s, 1),
                       model=p.model.get("name"), feature_spec_hash=p.model.get("feature_spec_hash"))
        except (ModelError, OSError, UnicodeDecodeError) as e:
            row["error"] = str(e)
        out.append(row)
    return out


# ---------------------------------------------------------------- `realtime-ser profiles`


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("List the speaker profiles (name, created, seconds of speech, model). Profiles live in "
                     "the folder printed last; delete one by deleting its NAME.json file.")
    p.add_argument("--json", action="store_true", help="one JSON object per profile instead of a table")


def run(args: argparse.Namespace) -> int:
    import sys

    rows = list_profiles()
    out = sys.stdout
    if args.json:
        for r in rows:
            out.write(json.dumps(r) + "\n")
        out.flush()
        return 0
    if rows:
        width = max(4, *(len(r["name"]) for r in rows))
        out.write(f"{'name':<{width}}  {'created':<20}  {'speech_s':>8}  model\n")
        for r in rows:
            if "error" in r:
                out.write(f"{r['name']:<{width}}  (unreadable: {r['error']})\n")
            else:
                out.write(f"{r['name']:<{width}}  {r['created']:<20}  {r['speech_s']:>8.1f}  {r['model']}\n")
    else:
        out.write("no profiles yet; make one with `realtime-ser calibrate --profile NAME`\n")
    out.write(f"(folder: {profiles_dir()}; delete a profile by deleting its .json file)\n")
    out.flush()
    return 0
