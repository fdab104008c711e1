"""Corpora through their manifests, and the speaker folds of the standard protocols.

The data root holds one folder per corpus, each with a ``MANIFEST.csv``
(``path,speaker,emotion,duration_s,sha256``), and ``protocols/<corpus>_speaker_folds.csv``
(``speaker,fold``) for the corpora that have a standard within-corpus protocol. The list of
corpora is data, not code: every sub-folder with a manifest is a corpus
(``discover_corpora``), so a seventh corpus is a folder with a manifest. The root is found
from ``--data DIR``, else ``$REALTIME_SER_DATA``, else ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from realtime_ser.errors import SerError

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "REALTIME_SER_DATA"
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
# The corpora with a standard within-corpus speaker protocol (protocols/<corpus>_speaker_folds.csv).
PROTOCOL_CORPORA = ("ravdess", "emodb")
MANIFEST_NAME = "MANIFEST.csv"
MANIFEST_COLUMNS = ("path", "speaker", "emotion", "duration_s", "sha256")
FOLD_COLUMNS = ("speaker", "fold")
# Every emotion name either corpus uses, in the order of the shipped model's label columns.
ALL_LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised", "boredom")


class DataError(SerError):
    """A missing or malformed data root, manifest, fold file or clip."""

    exit_code = 2


@dataclass(frozen=True)
class Clip:
    corpus: str
    clip_id: str  # manifest path without extension, unique within its corpus
    path: Path
    speaker: str
    label: str
    duration_s: float
    sha256: str


def resolve_data_root(arg: str | os.PathLike | None = None) -> Path:
    """The data root from the flag, the environment or the default; ``DataError`` if it is not there."""
    if arg:
        root, origin = Path(arg), "--data"
    elif os.environ.get(DATA_ENV):
        root, origin = Path(os.environ[DATA_ENV]), f"${DATA_ENV}"
    else:
        root, origin = DEFAULT_DATA_ROOT, "the default location"
    if not root.is_dir():
        raise DataError(f"data root {root} (from {origin}) is not a directory; give the folder holding "
                        f"ravdess/, emodb/ and protocols/ with --data DIR or ${DATA_ENV}")
    return root.resolve()


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or ())]
            if missing:
                raise DataError(f"{path} lacks column(s) {', '.join(missing)}; expected header {','.join(columns)}")
            return list(reader)
    except FileNotFoundError:
        raise DataError(f"{path} not found; is the data root complete?") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} is not a readable CSV file ({e})") from None


def discover_corpora(root: Path) -> tuple[str, ...]:
    """Every sub-folder of ``root`` holding a ``MANIFEST.csv``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} is not a directory")
    found = tuple(sorted(d.name for d in root.iterdir() if d.is_dir() and (d / MANIFEST_NAME).is_file()))
    if not found:
        raise DataError(f"data root {root} holds no corpus (no sub-folder with a {MANIFEST_NAME})")
    return found


def check_corpora(root: Path, names) -> tuple[str, ...]:
    """``names`` if each is a corpus of ``root``; ``DataError`` naming the known ones otherwise."""
    known = discover_corpora(root)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise DataError(f"unknown corpus {', '.join(unknown)} in {root}; found {', '.join(known)}")
    return tuple(names)


def load_manifest(root: Path, corpus: str) -> list[Clip]:
    """All clips of one corpus, in manifest order."""
    folder = Path(root) / corpus
    path = folder / MANIFEST_NAME
    clips = []
    for i, row in enumerate(_read_csv(path, MANIFEST_COLUMNS), start=2):
        label = row["emotion"].strip()
        if label not in ALL_LABELS:
            raise DataError(f"{path} line {i}: unknown emotion {label!r}; expected one of {', '.join(ALL_LABELS)}")
        try:
            duration = float(row["duration_s"])
        except ValueError:
            raise DataError(f"{path} line {i}: duration_s {row['duration_s']!r} is not a number") from None
        rel = row["path"].strip()
        clips.append(Clip(corpus=corpus, clip_id=str(Path(rel).with_suffix("")), path=folder / rel,
                          speaker=row["speaker"].strip(), label=label, duration_s=duration,
                          sha256=row["sha256"].strip().lower()))
    if not clips:
        raise DataError(f"{path} lists no clips")
    return clips


def load_folds(root: Path, corpus: str) -> dict[str, int]:
    """Speaker -> fold number of the corpus' standard speaker-independent protocol."""
    path = root / "protocols" / f"{corpus}_speaker_folds.csv"
    folds = {}
    for i, row in enumerate(_read_csv(path, FOLD_COLUMNS), start=2):
        try:
            folds[row["speaker"].strip()] = int(row["fold"])
        except ValueError:
            raise DataError(f"{path} line {i}: fold {row['fold']!r} is not an integer") from None
    if not folds:
        raise DataError(f"{path} lists no speakers")
    return folds


def corpus_labels(clips: list[Clip]) -> list[str]:
    """The classes present, in the canonical order of ``ALL_LABELS``."""
    present = {c.label for c in clips}
    return [lab for lab in ALL_LABELS if lab in present]


def limit_speakers(folds: dict[str, int], n: int | None) -> dict[str, int]:
    """At most ``n`` speakers, taken round-robin over the folds so that as many folds as possible stay."""
    if n is None or n >= len(folds):
        return dict(folds)
    by_fold: dict[int, list[str]] = {}
    for spk, f in sorted(folds.items(), key=lambda kv: (kv[1], kv[0])):
        by_fold.setdefault(f, []).append(spk)
    chosen: dict[str, int] = {}
    depth = 0
    while len(chosen) < n:
        for f in sorted(by_fold):
            if depth < len(by_fold[f]) and len(chosen) < n:
                chosen[by_fold[f][depth]] = f
        depth += 1
    return chosen
