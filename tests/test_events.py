"""Events (realtime_ser.events): the valence/arousal table, the JSON form and the schema file."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from realtime_ser.events import (
    SCHEMA_VERSION,
    VALENCE_AROUSAL,
    EndEvent,
    PredictionEvent,
    affect_coordinates,
    valence_arousal,
)

from helpers import load_schema


def test_valence_arousal_is_the_probability_weighted_table():
    labels = ("happy", "sad", "neutral")
    assert valence_arousal(labels, np.array([1.0, 0.0, 0.0])) == VALENCE_AROUSAL["happy"]
    v, a = valence_arousal(labels, np.array([0.5, 0.5, 0.0]))
    assert v == pytest.approx((0.8 - 0.7) / 2) and a == pytest.approx(0.0)
    assert valence_arousal(labels, None) == (0.0, 0.0)


def test_valence_arousal_clips_like_numpy():
    labels = ("happy", "sad")
    rng = np.random.default_rng(0)
    for p in [*rng.normal(0, 2, (200, 2)), [0.0, 0.0], [-0.0, 0.0], [5.0, -5.0], [-5.0, 5.0]]:
        p = np.asarray(p, dtype=np.float64)
        expected = tuple(round(float(x), 3) for x in np.clip(p @ np.array([VALENCE_AROUSAL[lb] for lb in labels]),
                                                              -1.0, 1.0))
        got = valence_arousal(labels, p)
        assert [str(x) for x in got] == [str(x) for x in expected]  # same values, signed zeros included
    assert all(np.isnan(x) for x in valence_arousal(labels, np.array([np.nan, 0.5])))


def test_aliases_and_unknown_labels():
    assert affect_coordinates("Fear") == VALENCE_AROUSAL["fearful"]
    assert affect_coordinates("surprise") == VALENCE_AROUSAL["surprised"]
    assert affect_coordinates("contempt") == (0.0, 0.0)


def test_table_stays_in_range():
    for v, a in VALENCE_AROUSAL.values():
        assert -1 <= v <= 1 and -1 <= a <= 1


def test_json_form_carries_schema_and_type_first_and_validates():
    ev = PredictionEvent(t_start=0.0, t_end=2.0, emotion="happy", confidence=0.8,
                         probabilities={"happy": 0.8, "sad": 0.2}, raw_probabilities=None, speech=False,
                         voiced_s=0.0, level_dbfs=-40.0, valence=0.5, arousal=0.3, latency_ms=None,
                         dropped_blocks=0, skipped_windows=0, normalizer_warmup=None).to_json()
    assert list(ev)[:2] == ["schema", "type"] and ev["schema"] == SCHEMA_VERSION and ev["type"] == "prediction"
    validator = jsonschema.Draft202012Validator(load_schema())
    validator.validate(json.loads(json.dumps(ev)))
    end = EndEvent(t=1.0, reason="error", windows=1, skipped_windows=0, dropped_blocks=0, error="boom").to_json()
    validator.validate(end)


def test_schema_rejects_malformed_events():
    validator = jsonschema.Draft202012Validator(load_schema())
    jsonschema.Draft202012Validator.check_schema(load_schema())
    bad = EndEvent(t=1.0, reason="because", windows=1, skipped_windows=0, dropped_blocks=0, error=None).to_json()
    assert not validator.is_valid(bad)
    assert not validator.is_valid({"schema": 2, "type": "end"})
