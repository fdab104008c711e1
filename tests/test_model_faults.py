"""Model faults (issue #5): every way a model file or its card can be wrong gives one ModelError that
names the fix, from the library and as one line + exit 4 from the CLI. Models are never unpickled."""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from realtime_ser import features
from realtime_ser.errors import ModelError
from realtime_ser.model import Model

REPO = Path(__file__).resolve().parent.parent
MODEL_EXIT = ModelError.exit_code


@pytest.fixture()
def model_copy(tiny_model_path: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "m.onnx"
    shutil.copy(tiny_model_path, dst)
    shutil.copy(tiny_model_path.with_suffix(".json"), dst.with_suffix(".json"))
    return dst


def _card(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def _write_card(path: Path, card: dict) -> None:
    path.with_suffix(".json").write_text(json.dumps(card))


def _resign(path: Path) -> None:
    """Make the card's hash match the (altered) ONNX file, so the next check down is the one hit."""
    card = _card(path)
    card["onnx_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    _write_card(path, card)


def _fault(path: Path, fault: str) -> None:
    card = _card(path)
    if fault == "card missing":
        path.with_suffix(".json").unlink()
    elif fault == "card not json":
        path.with_suffix(".json").write_text("{not json")
    elif fault == "card lacks keys":
        del card["labels"], card["vad"]
        _write_card(path, card)
    elif fault == "feature hash differs":
        card["feature_spec"]["hash"] = "0123456789abcdef"
        _write_card(path, card)
    elif fault == "input width differs":
        card["input_width"] = features.N_FEATURES + 1
        _write_card(path, card)
    elif fault == "labels differ from outputs":
        card["labels"] = card["labels"] + ["surprised"]
        _write_card(path, card)
    elif fault in CARD_VALUE_FAULTS:
        key, value = CARD_VALUE_FAULTS[fault]
        card[key] = value
        _write_card(path, card)
    elif fault == "labels reordered":
        card["labels"] = card["labels"][1:] + card["labels"][:1]
        _write_card(path, card)
    elif fault == "onnx truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        _resign(path)
    elif fault == "onnx is random bytes":
        path.write_bytes(b"\x08\x07garbage" * 100)
        _resign(path)
    elif fault == "onnx changed after export":
        path.write_bytes(path.read_bytes() + b"\x00")
    else:
        raise AssertionError(fault)


CARD_VALUE_FAULTS = {  # issue 12: each gave a traceback or blamed a flag nobody passed
    "window_s null": ("window_s", None),
    "window_s 1e6": ("window_s", 1e6),
    "normalization null": ("normalization", None),
    "normalization a string": ("normalization", "none"),
    "feature_spec a string": ("feature_spec", "ser-functionals"),
    "input_width a string": ("input_width", "299"),
}

FAULTS = {
    "window_s null": "window_s",
    "window_s 1e6": "window_s",
    "normalization null": "normalization",
    "normalization a string": "normalization",
    "feature_spec a string": "feature_spec",
    "input_width a string": "input_width must be an integer",
    "labels reordered": "not in the order",
    "card missing": "card",
    "card not json": "json",
    "card lacks keys": "lacks labels",
    "feature hash differs": "feature spec",
    "input width differs": "input width",
    "labels differ from outputs": "labels",
    "onnx truncated": "onnx",
    "onnx is random bytes": "onnx",
    "onnx changed after export": "does not match its card",
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_model_faults_raise_one_clear_model_error(model_copy: Path, fault: str):
    _fault(model_copy, fault)
    with pytest.raises(ModelError) as info:
        Model.load(model_copy)
    message = str(info.value)
    assert "\n" not in message
    assert FAULTS[fault] in message.lower()
    assert str(model_copy.with_suffix("")) in message  # says which file


def test_input_width_of_the_graph_itself_is_checked(tmp_path: Path):
    """An ONNX graph that takes another feature width than the code computes is refused even when its
    card claims the right width."""
    import numpy as np
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    width = features.N_FEATURES - 7
    rng = np.random.default_rng(0)
    clf = LogisticRegression().fit(rng.standard_normal((40, width)), np.arange(40) % 2)
    onx = convert_sklearn(clf, initial_types=[("features", FloatTensorType([None, width]))],
                          options={id(clf): {"zipmap": False}}, target_opset=17)
    path = tmp_path / "narrow.onnx"
    path.write_bytes(onx.SerializeToString())
    _write_card(path, {"labels": ["a", "b"], "sample_rate": features.SAMPLE_RATE, "window_s": 2.0, "hop_s": 0.5,
                       "feature_spec": {"hash": features.SPEC_HASH}, "input_width": features.N_FEATURES,
                       "normalization": {"type": "none"}, "vad": {}, "onnx_sha256": hashlib.sha256(
                           path.read_bytes()).hexdigest()})
    with pytest.raises(ModelError, match=f"takes {width} features"):
        Model.load(path)


def test_cli_model_fault_is_one_line_and_exit_4(model_copy: Path, tmp_path: Path):
    _fault(model_copy, "feature hash differs")
    wav = tmp_path / "x.wav"
    import numpy as np
    import soundfile as sf

    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000)
    r = subprocess.run([sys.executable, "-m", "realtime_ser", "listen", "--no-dashboard", "--model", str(model_copy),
                        "--replay", str(wav), "--pace", "fast"], capture_output=True, text=True, timeout=120)
    assert r.returncode == MODEL_EXIT
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "feature spec" in lines[0] and "Traceback" not in r.stderr


def test_no_module_unpickles_models():
    """No pickle, joblib or numpy allow_pickle anywhere in the runtime or training code."""
    offenders = []
    for path in list((REPO / "realtime_ser").rglob("*.py")) + list((REPO / "train").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "joblib", "dill", "cloudpickle") for n in names):
                    offenders.append(f"{path.name}: imports {names}")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and getattr(node.value, "value", False):
                offenders.append(f"{path.name}: allow_pickle=True")
    assert offenders == []


@pytest.mark.parametrize("fault", sorted(CARD_VALUE_FAULTS) + ["labels reordered"])
def test_cli_card_faults_exit_4_naming_the_card(model_copy: Path, tmp_path: Path, fault: str):
    """A card fault is exit 4 with one line naming the card, never exit 2 about --window."""
    import subprocess

    from helpers import cli_command, voice, write_audio

    _fault(model_copy, fault)
    wav = write_audio(tmp_path / "v.wav", voice(180.0, 2.5))
    run = subprocess.run(cli_command() + ["listen", "--replay", str(wav), "--pace", "fast", "--no-dashboard",
                                          "--model", str(model_copy)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 4, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("realtime-ser: error: "), run.stderr
    assert "--window" not in lines[0] and str(model_copy.with_suffix("")) in lines[0]
    assert run.stdout == ""


def test_shipped_model_carries_its_label_checksum():
    import onnx

    from realtime_ser.model import DEFAULT_MODEL, LABELS_METADATA_KEY, labels_checksum, read_card

    props = {p.key: p.value for p in onnx.load(str(DEFAULT_MODEL)).metadata_props}
    assert props[LABELS_METADATA_KEY] == labels_checksum(read_card(DEFAULT_MODEL.with_suffix(".json"))["labels"])
