"""Loading and checking a model: an ONNX file plus its JSON model card. Never pickle.

The card (``models/default.json`` for the shipped model) is the contract between
training and the runtime. Required keys:

* ``labels``: class names, in the order of the ONNX probability columns;
* ``sample_rate``, ``window_s``, ``hop_s``: the framing the model was trained with;
* ``feature_spec``: the feature spec, with its ``hash`` (must equal ``features.SPEC_HASH``);
* ``input_width``: the feature vector length (must equal ``features.N_FEATURES``);
* ``normalization``: ``{"type": "none"}`` or the online speaker normaliser's prior
  (``realtime_ser.normalize.NormalizerParams.to_json``);
* ``vad``: ``{"min_voiced_s": ..., "floor_dbfs": ...}``, the gate used in training;
* ``onnx_sha256``: the hash of the ONNX file it describes.

The ONNX graph takes one float32 input ``[N, input_width]`` and has a probability
output ``[N, len(labels)]`` (skl2onnx with ``zipmap=False``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from . import features
from .errors import ModelError
from .normalize import NormalizerParams
from .vad import VadParams


def shipped_model_path() -> Path:
    """The shipped ``models/default.onnx``: package data ``realtime_ser.models`` (pyproject.toml maps it to the
    top-level ``models/``), found with importlib.resources in a wheel and in an editable install alike; a bare
    checkout on ``sys.path`` (no install) falls back to the ``models/`` beside the package."""
    from importlib import resources

    try:
        found = resources.files("realtime_ser.models").joinpath("default.onnx")
    except ModuleNotFoundError:
        found = None
    if isinstance(found, Path) and found.is_file():
        return found
    return Path(__file__).resolve().parent.parent / "models" / "default.onnx"


DEFAULT_MODEL = shipped_model_path()
PACKAGE_MODEL_DIR = DEFAULT_MODEL.parent
REQUIRED_CARD_KEYS = ("labels", "sample_rate", "window_s", "hop_s", "feature_spec", "input_width",
                      "normalization", "vad", "onnx_sha256")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


LABELS_METADATA_KEY = "realtime_ser.labels_sha256"
"""ONNX ``metadata_props`` key: the sha256 of the card's label list (JSON, in order), written at export
and checked at load, so a card whose labels were reordered (or belong to another model) is refused."""
ORT_TELEMETRY_VAR = "ORT_DISABLE_TELEMETRY"  # 1: onnxruntime writes no device id under $HOME and sends nothing


def labels_checksum(labels: Iterable[str]) -> str:
    return hashlib.sha256(json.dumps(list(labels), ensure_ascii=True).encode("ascii")).hexdigest()


def with_label_checksum(onnx_bytes: bytes, labels: Iterable[str]) -> bytes:
    """The ONNX model with the label list's checksum in its metadata (used by ``train export``)."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    kept = [p for p in model.metadata_props if p.key != LABELS_METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    entry = model.metadata_props.add()
    entry.key, entry.value = LABELS_METADATA_KEY, labels_checksum(labels)
    return model.SerializeToString()


def card_path_for(onnx_path: Path) -> Path:
    return onnx_path.with_suffix(".json")


def read_card(card_path: Path) -> dict:
    """The parsed, checked model card; ``ModelError`` naming the fix otherwise."""
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model card {card_path} not found: every model needs its JSON card beside it "
                         f"(same name, .json); re-export it with `python -m train export`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"model card {card_path} is not readable JSON ({e}); "
                         "restore it or re-export the model") from None
    if not isinstance(card, dict):
        raise ModelError(f"model card {card_path} must be a JSON object, got {type(card).__name__}")
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise ModelError(f"model card {card_path} lacks {', '.join(missing)}; "
                         "re-export the model with `python -m train export`")
    _check_card_types(card, card_path)
    spec_hash = card["feature_spec"].get("hash")
    if spec_hash != features.SPEC_HASH:
        raise ModelError(f"model card {card_path} was trained on feature spec {spec_hash!r} but this realtime-ser "
                         f"computes {features.SPEC_HASH!r}; retrain the model (`python -m train export`) or install "
                         f"the realtime-ser version it was made with")
    if type(card["input_width"]) is not int:
        raise ModelError(f"model card {card_path}: input_width must be an integer, got "
                         f"{json.dumps(card['input_width'])} ({type(card['input_width']).__name__}); "
                         "re-export the model")
    if card["input_width"] != features.N_FEATURES:
        raise ModelError(f"model card {card_path} says input width {card['input_width']} but the features have "
                         f"{features.N_FEATURES}; retrain the model")
    if card["sample_rate"] != features.SAMPLE_RATE:
        raise ModelError(f"model card {card_path} says sample rate {card['sample_rate']}, expected "
                         f"{features.SAMPLE_RATE}; retrain the model")
    labels = card["labels"]
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)
            and len(set(labels)) == len(labels)):
        raise ModelError(f"model card {card_path}: labels must be a non-empty list of distinct strings")
    return card


CARD_WINDOW_RANGE_S = (0.5, 10.0)  # the runtime's window limits (stream.MIN_WINDOW_S, MAX_WINDOW_S)


def _check_card_types(card: dict, card_path: Path) -> None:
    """Each card field has the JSON type the runtime uses (a card fault is a ModelError naming the card,
    never a traceback nor a message about a command-line flag nobody passed)."""
    def fault(what: str) -> ModelError:
        return ModelError(f"model card {card_path}: {what}; re-export the model with `python -m train export`")

    if not isinstance(card["feature_spec"], dict):
        raise fault(f"feature_spec must be an object with a hash, got {type(card['feature_spec']).__name__}")
    if not isinstance(card["normalization"], dict):
        raise fault(f"normalization must be an object with a type, got {json.dumps(card['normalization'])}")
    if not isinstance(card["vad"], dict):
        raise fault(f"vad must be an object, got {json.dumps(card['vad'])}")
    for key in ("window_s", "hop_s"):
        value = card[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise fault(f"{key} must be a positive number of seconds, got {json.dumps(value)}")
    lo, hi = CARD_WINDOW_RANGE_S
    if not lo <= card["window_s"] <= hi:
        raise fault(f"window_s {card['window_s']:g} is outside the runtime's {lo:g}-{hi:g} s")
    if card["hop_s"] > card["window_s"]:
        raise fault(f"hop_s {card['hop_s']:g} is longer than window_s {card['window_s']:g}")
    if not isinstance(card["onnx_sha256"], str):
        raise fault(f"onnx_sha256 must be a string, got {json.dumps(card['onnx_sha256'])}")


def _quiet_onnxruntime(ort: ModuleType) -> None:
    """No telemetry (a voice tool sends nothing and writes no device id under $HOME), logs at error only."""
    try:
        ort.disable_telemetry_events()
        ort.set_default_logger_severity(3)
    except Exception:  # noqa: BLE001 (older onnxruntime without these)
        pass


@dataclass
class Model:
    """A checked model: ``predict_proba(features) -> probabilities``, one intra- and inter-op thread."""

    path: Path
    card: dict
    labels: tuple[str, ...]
    normalizer: NormalizerParams | None
    vad: VadParams
    _session: Any  # an onnxruntime.InferenceSession (onnxruntime has no type stubs)
    _input: str
    _prob_output: str

    @property
    def name(self) -> str:
        return self.card.get("name", self.path.stem)

    @property
    def window_s(self) -> float:
        return float(self.card["window_s"])

    @property
    def hop_s(self) -> float:
        return float(self.card["hop_s"])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``(N, len(labels))`` float32 probabilities for ``(N, input_width)`` (normalised) features."""
        x = np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32)
        (probs,) = self._session.run([self._prob_output], {self._input: x})
        return np.asarray(probs, dtype=np.float32)

    @classmethod
    def load(cls, onnx_path: str | Path | None = None, card_path: str | Path | None = None) -> Model:
        path = Path(onnx_path) if onnx_path is not None else DEFAULT_MODEL
        if not path.exists():
            raise ModelError(f"model file {path} not found; omit --model to use the shipped model "
                             f"or give the path of an .onnx file exported by `python -m train export`")
        if not path.is_file():
            raise ModelError(f"model path {path} is not a file; give the path of an .onnx file")
        card = read_card(Path(card_path) if card_path is not None else card_path_for(path))
        try:
            digest = sha256_file(path)
        except OSError as e:
            raise ModelError(f"cannot read model file {path} ({e.strerror}); check its permissions") from None
        if digest != card["onnx_sha256"]:
            raise ModelError(f"model file {path} does not match its card (sha256 {digest[:12]}..., card says "
                             f"{str(card['onnx_sha256'])[:12]}...): the file is corrupted or the card belongs to "
                             f"another model; restore both from the same export")

        # onnxruntime writes a telemetry device id under $HOME/.cache when it is imported, unless told not to
        os.environ.setdefault(ORT_TELEMETRY_VAR, "1")
        import onnxruntime as ort  # heavy: imported only when a model is really loaded

        _quiet_onnxruntime(ort)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises several unrelated types for a bad file
            raise ModelError(f"model file {path} is not a loadable ONNX model ({type(e).__name__}); "
                             f"restore it or re-export it with `python -m train export`") from None
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"model {path} has {len(inputs)} inputs, expected one float feature input")
        width = inputs[0].shape[-1] if inputs[0].shape else None
        if isinstance(width, int) and width != features.N_FEATURES:
            raise ModelError(f"model {path} takes {width} features but realtime-ser computes "
                             f"{features.N_FEATURES}; retrain it with `python -m train export`")
        prob_outputs = [o.name for o in session.get_outputs() if "prob" in o.name.lower()]
        if not prob_outputs:
            raise ModelError(f"model {path} has no probability output; export it with zipmap off")
        labels = tuple(card["labels"])
        try:
            stored = session.get_modelmeta().custom_metadata_map.get(LABELS_METADATA_KEY)
        except Exception:  # noqa: BLE001 (metadata unreadable: treated as absent)
            stored = None
        if stored is not None and stored != labels_checksum(labels):
            raise ModelError(f"model card for {path}: its labels {list(labels)} are not the ones (or not in the order) "
                             f"the model was exported with; restore the card from the same export")
        normalization = card["normalization"]
        normalizer = None
        if normalization.get("type") == "online_speaker":
            try:
                normalizer = NormalizerParams.from_json(normalization)
            except (KeyError, TypeError, ValueError) as e:
                raise ModelError(f"model card for {path}: bad normalization block ({e}); re-export the model") from None
            if len(normalizer.prior_mean) != features.N_FEATURES:
                raise ModelError(f"model card for {path}: normalization prior has {len(normalizer.prior_mean)} "
                                 f"values, expected {features.N_FEATURES}; re-export the model")
        elif normalization.get("type") != "none":
            raise ModelError(f"model card for {path}: unknown normalization type {normalization.get('type')!r}")
        try:
            vad = VadParams(**card["vad"])
        except (TypeError, ValueError) as e:
            raise ModelError(f"model card for {path}: bad vad block ({e}); re-export the model") from None
        model = cls(path=path, card=card, labels=labels, normalizer=normalizer, vad=vad,
                    _session=session, _input=inputs[0].name, _prob_output=prob_outputs[0])
        try:
            probe = model.predict_proba(np.zeros((1, features.N_FEATURES), dtype=np.float32))
        except Exception as e:  # a graph that loads but cannot run on our input
            raise ModelError(f"model {path} fails on a {features.N_FEATURES}-feature input ({type(e).__name__}); "
                             f"retrain it with `python -m train export`") from None
        if probe.shape != (1, len(labels)):
            raise ModelError(f"model {path} outputs {probe.shape[-1]} classes but its card lists {len(labels)} "
                             f"labels; re-export the model and its card together")
        return model
