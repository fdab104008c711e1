"""Smoothing (realtime_ser.smoothing): EMA weighted by speech, hysteresis, dwell, onset and the silence state."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_ser.smoothing import DEFAULT_ONSET_S, SILENCE, Smoother, SmoothingParams

LABELS = ("neutral", "happy", "sad")
HOP = 0.5
A = np.array([0.05, 0.9, 0.05])  # happy
B = np.array([0.05, 0.05, 0.9])  # sad
AT_ONCE = dict(onset_s=0.0)  # the first speech window after silence declares the emotion (no onset evidence)


def feed(sm: Smoother, seq, t0: float = HOP, voiced=None):
    """``seq`` of probability arrays (speech) or None (no speech), one per hop; returns states.

    ``voiced``: the windows' voiced seconds (None: unknown, every window counts fully)."""
    out = []
    for i, p in enumerate(seq):
        out.append(sm.update(t0 + i * HOP, p is not None, p, voiced_s=None if voiced is None else voiced[i]))
    return out


def test_starts_in_silence_and_needs_onset_evidence_before_the_first_emotion():
    sm = Smoother(LABELS)
    s = feed(sm, [None, None, A, A, A])
    # full windows add one hop (0.5 s) of evidence each: the default 0.75 s is reached on the second
    assert [x.emotion for x in s] == [SILENCE, SILENCE, SILENCE, "happy", "happy"]
    assert s[0].probabilities is None and s[0].confidence is None and not s[0].changed
    assert s[2].probabilities is None and not s[2].changed and sm.pending is False
    assert s[3].changed and s[3].previous == SILENCE
    assert s[3].confidence == pytest.approx(0.9)
    assert HOP < DEFAULT_ONSET_S <= 2 * HOP


def test_onset_zero_takes_the_first_speech_window_at_once():
    sm = Smoother(LABELS, SmoothingParams(**AT_ONCE))
    s = feed(sm, [None, None, A])
    assert [x.emotion for x in s] == [SILENCE, SILENCE, "happy"]
    assert s[2].changed and s[2].previous == SILENCE and s[2].confidence == pytest.approx(0.9)


def test_pending_onset_is_reported_as_silence():
    sm = Smoother(LABELS)
    state = sm.update(0.5, True, A, voiced_s=1.2)
    assert sm.pending and state.emotion == SILENCE and state.probabilities is None and not state.changed


def test_a_window_with_little_speech_at_the_onset_does_not_decide_the_emotion():
    # the first window holds only the utterance's first syllable (0.35 s voiced) and the model says
    # "sad" on it; the full windows that follow say "happy". Before: "sad" at once, then a change.
    seq, voiced = [B, A, A, A, A, A], [0.35, 1.2, 1.3, 1.3, 1.3, 1.3]
    at_once = feed(Smoother(LABELS, SmoothingParams(**AT_ONCE, full_voiced_s=1e-3)), seq, voiced=voiced)
    assert at_once[0].emotion == "sad"  # the weakness this guards against
    states = feed(Smoother(LABELS), seq, voiced=voiced)
    emotions = [s.emotion for s in states]
    assert "sad" not in emotions and emotions[-1] == "happy"
    assert sum(s.changed for s in states) == 1  # silence -> happy, no flicker


def test_weak_trailing_windows_move_the_average_less_than_full_ones():
    full = feed(Smoother(LABELS), [A] * 6 + [B], voiced=[1.3] * 6 + [1.3])[-1]
    weak = feed(Smoother(LABELS), [A] * 6 + [B], voiced=[1.3] * 6 + [0.3])[-1]
    i = LABELS.index("sad")
    assert weak.probabilities[i] < full.probabilities[i] / 2
    # three trailing windows with only 0.3 s of speech each, all contrary: the emotion is held
    states = feed(Smoother(LABELS), [A] * 6 + [B] * 3, voiced=[1.3] * 6 + [0.3] * 3)
    assert [s.emotion for s in states[-3:]] == ["happy"] * 3
    # while three full contrary windows do change it
    assert feed(Smoother(LABELS), [A] * 6 + [B] * 3)[-1].emotion == "sad"


def test_a_short_burst_below_the_onset_never_leaves_silence_and_is_forgotten():
    sm = Smoother(LABELS)
    burst = feed(sm, [B, None, None, None])  # 0.5 s of evidence, then no speech for the 1 s hold
    assert all(s.emotion == SILENCE and not s.changed for s in burst)
    assert not sm.pending
    states = feed(sm, [A, A, A], t0=(len(burst) + 1) * HOP)
    assert [s.emotion for s in states] == [SILENCE, "happy", "happy"] and states[1].changed
    assert states[1].confidence == pytest.approx(0.9)  # the burst's "sad" was dropped with the hold


@pytest.mark.parametrize("position", range(3, 9))
@pytest.mark.parametrize("voiced", [0.3, 0.8, 1.5])
def test_one_contrary_window_never_flips_the_state(position, voiced):
    seq = [A] * 10
    seq[position] = B
    voiced_s = [1.3] * 10
    voiced_s[position] = voiced
    states = feed(Smoother(LABELS), seq, voiced=voiced_s)
    assert "sad" not in [s.emotion for s in states]


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
    params = SmoothingParams(tau_s=0.1, min_dwell_s=2.0, **AT_ONCE)  # tiny tau: the average follows at once
    sm = Smoother(LABELS, params)
    states = feed(sm, [A, B, B, B, B, B])
    emotions = [s.emotion for s in states]
    assert emotions[:4] == ["happy"] * 4  # t = 0.5 .. 2.0: within 2 s of the change at 0.5
    assert emotions[4] == "sad"  # t = 2.5


def test_exit_threshold_lets_go_of_a_fading_emotion():
    params = SmoothingParams(tau_s=0.1, enter=0.9, exit=0.4, min_dwell_s=0.0, **AT_ONCE)
    sm = Smoother(LABELS, params)
    mixed = np.array([0.25, 0.35, 0.40])  # sad is best but below enter; happy below exit
    states = feed(sm, [A, mixed])
    assert states[-1].emotion == "sad"
    between = np.array([0.1, 0.45, 0.45])  # happy between exit and enter: held by hysteresis
    sm2 = Smoother(LABELS, params)
    assert feed(sm2, [A, between, between])[-1].emotion == "happy"


def test_silence_after_the_hold_resets_the_average():
    sm = Smoother(LABELS, SmoothingParams(silence_hold_s=1.0, **AT_ONCE))
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
                                    dict(min_dwell_s=-1), dict(silence_hold_s=float("nan")), dict(onset_s=-0.5),
                                    dict(onset_s=float("inf")), dict(full_voiced_s=0.0), dict(full_voiced_s=-1.0),
                                    dict(full_voiced_s=float("nan"))])
def test_invalid_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        SmoothingParams(**kwargs)


def test_parameters_are_in_the_start_event_form():
    params = SmoothingParams(onset_s=0.75, full_voiced_s=1.2)
    assert params.to_json()["onset_s"] == 0.75 and params.to_json()["full_voiced_s"] == 1.2
    assert params.speech_weight(0.6) == pytest.approx(0.5)
    assert params.speech_weight(2.0) == 1.0 and params.speech_weight(None) == 1.0


def test_silence_cannot_be_a_label():
    with pytest.raises(ValueError):
        Smoother(("happy", SILENCE))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.tuples(st.lists(st.floats(0, 10, allow_nan=False), min_size=3, max_size=3),
                                               st.floats(0, 2, allow_nan=False))),
                min_size=1, max_size=30),
       st.sampled_from([0.0, DEFAULT_ONSET_S]))
def test_smoothed_output_is_always_a_distribution(seq, onset_s):
    sm = Smoother(LABELS, SmoothingParams(onset_s=onset_s))
    probabilities = [None if x is None else np.array(x[0]) for x in seq]
    voiced = [None if x is None else x[1] for x in seq]
    for state in feed(sm, probabilities, voiced=voiced):
        if state.emotion == SILENCE:
            assert state.probabilities is None
        else:
            assert state.probabilities.sum() == pytest.approx(1.0)
            assert np.all(state.probabilities >= 0)
            assert state.confidence == pytest.approx(state.probabilities[LABELS.index(state.emotion)])


# ------------------------------------------------------------------ window-grid phase robustness
#
# The same sound seen through window grids of different phases (0, 0.05, ... 0.45 s of silence
# prepended) must give the same smoothed emotion changes, each within one hop of the others.

GRID_LABELS = ("neutral", "happy", "sad", "surprised")
GRID_WINDOW_S = 2.0
GRID_VOICED_SHARE = 0.7  # voiced seconds per second of speech
GRID_MIN_VOICED_S = 0.3  # the VAD's threshold
GRID_EDGE_VOICED_S = 0.5  # below this the stand-in model answers from the edge of the utterance ...
GRID_EDGE = np.array([0.1, 0.15, 0.15, 0.6])  # ... "surprised", as the real model often does there
GRID_CLEAR_P = 0.8
GRID_PADS = tuple(np.round(np.arange(0.0, HOP, HOP / 10), 3))
GRID_UTTERANCES = ((1.0, 4.0, "happy"), (7.0, 10.0, "sad"))  # (start s, end s, label), silence between
GRID_TOTAL_S = 13.0
TIME_TOLERANCE_S = 1e-6


def grid_windows(pad_s: float) -> list[tuple[float, bool, float, np.ndarray | None]]:
    """(t_end, speech, voiced_s, probabilities) of the windows over GRID_UTTERANCES delayed by ``pad_s``."""
    out = []
    for k in range(1, int((GRID_TOTAL_S + pad_s) / HOP) + 1):
        end = k * HOP
        overlap = {label: max(0.0, min(end, b + pad_s) - max(end - GRID_WINDOW_S, a + pad_s))
                   for a, b, label in GRID_UTTERANCES}
        voiced = GRID_VOICED_SHARE * sum(overlap.values())
        p = None
        if voiced >= GRID_MIN_VOICED_S:
            if voiced < GRID_EDGE_VOICED_S:
                p = GRID_EDGE
            else:
                p = np.full(len(GRID_LABELS), (1 - GRID_CLEAR_P) / (len(GRID_LABELS) - 1))
                p[GRID_LABELS.index(max(overlap, key=lambda label: overlap[label]))] = GRID_CLEAR_P
        out.append((end, p is not None, voiced, p))
    return out


def grid_changes(params: SmoothingParams, pad_s: float) -> list[tuple[float, str]]:
    sm = Smoother(GRID_LABELS, params)
    out = []
    for t_end, speech, voiced, p in grid_windows(pad_s):
        state = sm.update(t_end, speech, p, voiced_s=voiced)
        if state.changed:
            out.append((t_end - pad_s, state.emotion))
    return out


def phase_robust(runs: list[list[tuple[float, str]]], hop_s: float) -> bool:
    """Same sequence of emotions in every run, and each change within one hop across the runs."""
    if any([e for _, e in run] != [e for _, e in runs[0]] for run in runs):
        return False
    return all(max(times) - min(times) <= hop_s + TIME_TOLERANCE_S
               for times in zip(*[[t for t, _ in run] for run in runs], strict=False))


def test_changes_do_not_depend_on_the_window_grid_phase():
    runs = [grid_changes(SmoothingParams(), pad) for pad in GRID_PADS]
    assert phase_robust(runs, HOP), "\n".join(f"pad {p}: {r}" for p, r in zip(GRID_PADS, runs, strict=True))
    assert [e for _, e in runs[0]] == ["happy", SILENCE, "sad", SILENCE]
    # the old rule (the first speech window decides at once, every window counts fully) fails here:
    # at some phases the first window catches only the edge of the utterance and says "surprised"
    legacy = [grid_changes(SmoothingParams(**AT_ONCE, full_voiced_s=1e-3), pad) for pad in GRID_PADS]
    assert not phase_robust(legacy, HOP)
    assert any("surprised" in [e for _, e in run] for run in legacy)


REPLAY_PADS_S = (0.0, 0.1, 0.2, 0.3, 0.4)
REPLAY_SR = 16_000


def test_replay_changes_do_not_depend_on_the_window_grid_phase(tiny_model, tmp_path):
    """The whole runtime (VAD voiced time -> speech weight -> smoothing) on generated voices."""
    from realtime_ser.api import Tracker

    from helpers import HIGH_F0, LOW_F0, voice, write_audio

    def silence(seconds: float) -> np.ndarray:
        return np.zeros(int(seconds * REPLAY_SR), np.float32)

    sound = np.concatenate([silence(1.0), voice(LOW_F0, 3.0, seed=1), silence(3.0), voice(HIGH_F0, 3.0, seed=2),
                            silence(3.0)])
    runs = []
    for pad in REPLAY_PADS_S:
        path = write_audio(tmp_path / f"pad{pad}.wav", np.concatenate([silence(pad), sound]))
        events = list(Tracker(model=tiny_model).replay(path, pace="fast"))
        runs.append((pad, events))
    changes = [[(e["t_end"] - pad, e["emotion"]) for e in events if e["type"] == "change"] for pad, events in runs]
    assert phase_robust(changes, HOP), "\n".join(f"pad {p}: {c}" for p, c in zip(REPLAY_PADS_S, changes, strict=False))
    assert [e for _, e in changes[0]] == ["sad", SILENCE, "happy", SILENCE]
    # the first emotion after silence comes when the speech windows, weighted by their voiced time
    # (from the VAD, as the events report it), reach the onset evidence: not on the first speech window
    params = SmoothingParams()
    for pad, events in runs:
        predictions = [e for e in events if e["type"] == "prediction"]
        evidence, previous_t, declared_at = 0.0, 0.0, None
        for e in predictions:
            if e["speech"]:
                evidence += (e["t_end"] - previous_t) * params.speech_weight(e["voiced_s"])
                if evidence >= params.onset_s - TIME_TOLERANCE_S:
                    declared_at = e["t_end"]
                    break
            previous_t = e["t_end"]
        first_speech = next(e["t_end"] for e in predictions if e["speech"])
        first_change = next(e["t_end"] for e in events if e["type"] == "change")
        assert first_change == pytest.approx(declared_at), f"pad {pad}"
        assert first_change > first_speech, f"pad {pad}: the first speech window decided"


CORPUS_PADS_S = (0.0, 0.1, 0.2, 0.3, 0.4)


@pytest.mark.corpus
@pytest.mark.slow
def test_ravdess_changes_depend_less_on_the_window_grid_phase(shared_data_dir, tmp_path, missing, live_measurements):
    """The 48 candidate files of the live test (tests/test_live.py), each at 5 grid phases: how many give
    the same smoothed emotion changes (labels, and times within one hop) at every phase, with the
    defaults and with the old rule (first speech window at once, every window counting fully)?

    The model runs once per file and phase; both smoothings then see exactly the same windows."""
    from test_live import CANDIDATE_CLIP_SETS, build_speech_file

    from realtime_ser.api import load_model, stream_config
    from realtime_ser.core import StreamProcessor

    model = load_model(None)
    config = stream_config(model)
    if not all((shared_data_dir / clip).exists() for clips in CANDIDATE_CLIP_SETS for clip in clips):
        missing("the RAVDESS candidate clips of tests/test_live.py are not all in the corpus")
    smoothings = {"defaults": SmoothingParams(), "old rule": SmoothingParams(**AT_ONCE, full_voiced_s=1e-3)}
    robust = {name: 0 for name in smoothings}
    for n, clips in enumerate(CANDIDATE_CLIP_SETS):
        audio, _ = build_speech_file(shared_data_dir, clips, tmp_path / f"candidate{n}.wav",
                                     config.window_s, config.hop_s)
        runs = {name: [] for name in smoothings}
        for pad in CORPUS_PADS_S:
            x = np.concatenate([np.zeros(round(pad * REPLAY_SR), np.float32), audio])
            proc = StreamProcessor(model, REPLAY_SR, config)
            windows = [(p.window.end / REPLAY_SR, *proc.classify(p.window))
                       for p in proc.ingest(0, x[:, None]) + proc.finish()]
            for name, params in smoothings.items():
                sm = Smoother(model.labels, params)
                runs[name].append([(t - pad, s.emotion) for t, decision, raw in windows
                                   for s in [sm.update(t, decision.speech, raw, voiced_s=decision.voiced_s)]
                                   if s.changed])
        for name in smoothings:
            robust[name] += phase_robust(runs[name], config.hop_s)
    live_measurements["RAVDESS files (of 48) with phase-robust changes, defaults / old rule"] = (
        f"{robust['defaults']} / {robust['old rule']}")
    assert robust["defaults"] > robust["old rule"], robust
