"""Smoothing (realtime_ser.smoothing): EMA, hysteresis, dwell and the silence state."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_ser.smoothing import SILENCE, Smoother, SmoothingParams

LABELS = ("neutral", "happy", "sad")
HOP = 0.5
A = np.array([0.05, 0.9, 0.05])  # happy
B = np.array([0.05, 0.05, 0.9])  # sad


def feed(sm: Smoother, seq, t0: float = HOP):
    """``seq`` of probability arrays (speech) or None (no speech), one per hop; returns states."""
    out = []
    for i, p in enumerate(seq):
        out.append(sm.update(t0 + i * HOP, p is not None, p))
    return out


def test_starts_in_silence_and_takes_the_first_speech_at_once():
    sm = Smoother(LABELS)
    s = feed(sm, [None, None, A])
    assert [x.emotion for x in s] == [SILENCE, SILENCE, "happy"]
    assert s[0].probabilities is None and s[0].confidence is None and not s[0].changed
    assert s[2].changed and s[2].previous == SILENCE
    assert s[2].confidence == pytest.approx(0.9)


def test_holds_through_one_contrary_window_and_changes_after_a_sustained_one():
    sm = Smoother(LABELS)
    states = feed(sm, [A] * 6 + [B] + [A] * 3 + [B] * 4)
    emotions = [s.emotion for s in states]
    assert emotions[6] == "happy"  # one contrary window: held
    assert emotions[7:10] == ["happy"] * 3
    assert emotions[-1] == "sad"  # a sustained change wins
    first_sad = emotions.index("sad")
    assert first_sad in (11, 12)  # after two or three contrary windows, not one
    assert sum(s.changed for s in states) == 2  # silence -> happy -> sad, no flicker


def test_minimum_dwell_delays_a_second_change():
    params = SmoothingParams(tau_s=0.1, min_dwell_s=2.0)  # tiny tau: the average follows at once
    sm = Smoother(LABELS, params)
    states = feed(sm, [A, B, B, B, B, B])
    emotions = [s.emotion for s in states]
    assert emotions[:4] == ["happy"] * 4  # t = 0.5 .. 2.0: within 2 s of the change at 0.5
    assert emotions[4] == "sad"  # t = 2.5


def test_exit_threshold_lets_go_of_a_fading_emotion():
    params = SmoothingParams(tau_s=0.1, enter=0.9, exit=0.4, min_dwell_s=0.0)
    sm = Smoother(LABELS, params)
    mixed = np.array([0.25, 0.35, 0.40])  # sad is best but below enter; happy below exit
    states = feed(sm, [A, mixed])
    assert states[-1].emotion == "sad"
    between = np.array([0.1, 0.45, 0.45])  # happy between exit and enter: held by hysteresis
    sm2 = Smoother(LABELS, params)
    assert feed(sm2, [A, between, between])[-1].emotion == "happy"


def test_silence_after_the_hold_resets_the_average():
    sm = Smoother(LABELS, SmoothingParams(silence_hold_s=1.0))
    states = feed(sm, [A, A, None, None, None, B])
    emotions = [s.emotion for s in states]
    assert emotions == ["happy", "happy", "happy", "silence", "silence", "sad"]
    assert states[3].changed and states[3].probabilities is None
    assert states[5].confidence == pytest.approx(0.9)  # the average restarted from this window alone


def test_windows_must_come_in_order_and_speech_needs_probabilities():
    sm = Smoother(LABELS)
    sm.update(1.0, False)
    with pytest.raises(ValueError):
        sm.update(0.5, False)
    with pytest.raises(ValueError):
        sm.update(1.5, True, None)


@pytest.mark.parametrize("kwargs", [dict(tau_s=0), dict(enter=1.5), dict(exit=0.6, enter=0.5),
                                    dict(min_dwell_s=-1), dict(silence_hold_s=float("nan"))])
def test_invalid_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        SmoothingParams(**kwargs)


def test_silence_cannot_be_a_label():
    with pytest.raises(ValueError):
        Smoother(("happy", SILENCE))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(st.floats(0, 10, allow_nan=False), min_size=3, max_size=3)),
                min_size=1, max_size=30))
def test_smoothed_output_is_always_a_distribution(seq):
    sm = Smoother(LABELS)
    for state in feed(sm, [None if p is None else np.array(p) for p in seq]):
        if state.emotion == SILENCE:
            assert state.probabilities is None
        else:
            assert state.probabilities.sum() == pytest.approx(1.0)
            assert np.all(state.probabilities >= 0)
            assert state.confidence == pytest.approx(state.probabilities[LABELS.index(state.emotion)])
