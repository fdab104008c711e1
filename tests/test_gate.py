"""The neural speech gate (realtime_ser/gate.py): what it refuses, what it keeps, and that the stream and
training get the same decisions.

Non-speech: six generated sounds (tests/sounds.py), 20 s each, must give zero speech windows (the old
energy/voicing gate declared chords, the hummed melody and mains hum speech). Speech: a real synthetic
voice (espeak-ng) in pink noise at 0 dB SNR, and clean clips of every corpus in ../shared/data (marked
``corpus``), must keep >= 90 % of their speech windows. "Speech windows" of a clean clip are the windows
the energy/voicing gate (``vad.decide``, reliable on clean studio audio) calls speech; of the noisy voice,
the windows that are speech in the clean voice.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import sounds

from realtime_ser import features, gate, vad
from realtime_ser.audio.windowing import Windower, windows_of
from realtime_ser.vad import VadParams

from conftest import SHARED_DATA, skip_or_fail

SR = 16_000
WINDOW, HOP = 2 * SR, SR // 2
KEEP_TARGET = 0.90
VOICE_SNR_DB = 0.0
CORPUS_CLIPS = 40  # per corpus, seeded sample
CORPORA = ("ravdess", "emodb", "nemo", "ased", "spanish", "turev")


def talker(seconds: float, seed: int = 0) -> np.ndarray:
    from realtime_ser.bench import formant_voice

    return formant_voice(140.0, seconds, seed=seed)


def decisions(x: np.ndarray) -> list[vad.VadResult]:
    return gate.clip_decisions(x, WINDOW, HOP)


HUM_SEED_THE_NETWORK_TAKES_FOR_SPEECH = 13  # found by scanning seeds 0-19 (docs/gate.md)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", sorted(sounds.NON_SPEECH))
def test_non_speech_sounds_give_no_speech_window(name, seed):
    x = sounds.non_speech(name, seed=seed)
    assert len(x) == sounds.SOUND_S * SR
    d = decisions(x)
    speech = [i for i, r in enumerate(d) if r.speech]
    max_prob = max(r.max_prob for r in d)
    assert speech == [], f"{name}: {len(speech)} of {len(d)} windows declared speech (max frame prob {max_prob:.3f})"


def test_humming_is_refused_by_the_closed_mouth_check():
    """Silero alone takes this hummed tune for speech; the closed-mouth check (no open vowel) refuses it."""
    x = sounds.hummed_melody(seed=HUM_SEED_THE_NETWORK_TAKES_FOR_SPEECH)
    d = decisions(x)
    p = VadParams()
    assert any(r.speech_s >= p.min_speech_s for r in d)  # the network alone would pass some windows
    assert not any(r.speech for r in d)
    assert min(r.tilt_db for r in d if r.speech_s >= p.min_speech_s) > p.closed_mouth_alpha_db


def test_the_old_gate_was_fooled_by_music_and_hum():
    """The figures the neural gate fixes: chords and mains hum passed the energy/voicing gate."""
    for name in ("chords", "mains_hum"):
        x = sounds.non_speech(name)
        old = [vad.decide(features.analyze(w.samples)).speech for w in windows_of(x, WINDOW, HOP)]
        assert np.mean(old) > 0.5, name


@pytest.fixture(scope="module")
def espeak_voice() -> np.ndarray:
    if not sounds.espeak_available():
        skip_or_fail("espeak-ng is not installed (apt-get install espeak-ng; bash .ci/run installs it)")
    return sounds.espeak_voice()


def test_a_voice_at_0_db_snr_in_pink_noise_is_still_speech(espeak_voice):
    clean = decisions(espeak_voice)
    ref = np.array([r.speech for r in clean])
    assert ref.mean() > 0.8  # the clean voice is speech
    noisy = sounds.mix_at_snr(espeak_voice, sounds.pink(len(espeak_voice) / SR + 1, seed=7), VOICE_SNR_DB)
    kept = np.array([r.speech for r in decisions(noisy)])[ref].mean()
    assert kept >= KEEP_TARGET, f"voice at {VOICE_SNR_DB:g} dB SNR: {kept:.1%} of its speech windows kept"
    # and the same pink noise alone is not speech
    assert not any(r.speech for r in decisions(sounds.pink(len(espeak_voice) / SR, seed=7)))


def test_silence_never_reaches_the_network():
    g = gate.SpeechGate()
    for w in windows_of(np.zeros(6 * SR, np.float32), WINDOW, HOP):
        assert not g.decide(w, features.analyze(w.samples)).speech
    assert g.neural_windows == 0 and g.vad.frames_done == 0


def test_stream_and_clip_decisions_agree_whatever_the_blocks():
    """The runtime's window-by-window gate (any block split) and training's clip_decisions are one function."""
    x = np.concatenate([np.zeros(SR // 3, np.float32), talker(4.0), np.zeros(SR, np.float32), talker(2.3, seed=4)])
    ref = decisions(x)
    for block in (160, 4_000, 17_001):
        g, wr = gate.SpeechGate(), Windower(WINDOW, HOP)
        got = []
        for i in range(0, len(x), block):
            got += [g.decide(w, features.analyze(w.samples)) for w in wr.push(x[i:i + block])]
        got += [g.decide(w, features.analyze(w.samples)) for w in wr.flush()]
        assert got == ref, block
    assert sum(r.speech for r in ref) >= 8


def test_each_hop_feeds_only_its_new_samples():
    g = gate.SpeechGate()
    ws = windows_of(talker(5.0), WINDOW, HOP)
    frames = []
    for w in ws:
        g.decide(w, features.analyze(w.samples))
        frames.append(g.vad.frames_done)
    steps = np.diff(frames)
    assert set(steps.tolist()) <= {15, 16}  # 8000 samples a hop = 15.6 frames of 512
    assert frames[-1] == (ws[-1].end // gate.FRAME)  # every sample once, never twice


def test_skipped_windows_restart_the_network_on_the_next_one():
    ws = windows_of(talker(6.0), WINDOW, HOP)
    g = gate.SpeechGate()
    g.decide(ws[3], features.analyze(ws[3].samples))
    before = g.vad.frames_done
    r = g.decide(ws[8], features.analyze(ws[8].samples))  # 5 windows skipped (overload)
    assert g.vad.frames_done == WINDOW // gate.FRAME and before > 0  # reset, then the whole window once
    assert r.speech


def test_silero_vad_matches_one_call_over_the_whole_signal():
    """State carried across calls of any size equals one run over all frames."""
    x = talker(3.0)
    whole = gate.SileroVAD()(x)
    v = gate.SileroVAD()
    parts = np.concatenate([v(x[i:i + 1234]) for i in range(0, len(x), 1234)])
    assert len(whole) == len(x) // gate.FRAME == len(parts)
    np.testing.assert_allclose(parts, whole, atol=1e-5)
    v.reset_states()
    np.testing.assert_allclose(v(x), whole, atol=1e-5)


def test_the_quartile_is_numpys_percentile():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 4, 5, 17, 60, 197):
        for _ in range(50):
            v = rng.standard_normal(n) * 20 + 10
            assert gate._quantile(v, gate.TILT_QUANTILE) == float(np.percentile(v, 100 * gate.TILT_QUANTILE)), n


def test_params_are_checked():
    with pytest.raises(ValueError, match="gate_threshold"):
        VadParams(gate_threshold=1.5)
    with pytest.raises(ValueError, match="min_speech_s"):
        VadParams(min_speech_s=0.0)


def test_missing_model_is_a_one_line_error(tmp_path):
    with pytest.raises(gate.GateError, match="cannot load the speech-gate model"):
        gate.SileroVAD(model_path=tmp_path / "nope.onnx")


def test_the_shipped_model_is_the_documented_one():
    readme = (Path(gate.__file__).parent / "silero" / "README.md").read_text(encoding="utf-8")
    assert gate.model_sha256() in readme
    assert (Path(gate.__file__).parent / "silero" / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")


ORIGINAL_MODEL = Path(__file__).parent / "data" / "silero_vad_16k_sequence.onnx"  # Silero's, unchanged
DERIVED_ATOL = 1e-5


def test_the_shipped_model_gives_the_original_silero_probabilities():
    """The shipped model is Silero's with its convolutions as matrix products: same probabilities, same states."""
    x = np.concatenate([talker(3.0), sounds.non_speech("chords")[: 3 * SR], sounds.hummed_melody(seed=13)[: 3 * SR]])
    original, shipped = gate.SileroVAD(model_path=ORIGINAL_MODEL), gate.SileroVAD()
    for i in range(0, len(x), HOP):  # hop by hop, as the stream runs it
        np.testing.assert_allclose(shipped(x[i:i + HOP]), original(x[i:i + HOP]), atol=DERIVED_ATOL)
    np.testing.assert_allclose(shipped._h, original._h, atol=10 * DERIVED_ATOL)
    np.testing.assert_allclose(shipped._c, original._c, atol=10 * DERIVED_ATOL)
    assert original.frames_done == len(x) // gate.FRAME


def test_the_shipped_model_is_derived_by_the_script():
    """scripts/derive_gate_model.py rebuilds the shipped file byte for byte from the original."""
    onnx = pytest.importorskip("onnx", reason="onnx (the train extra) is needed to derive the model")
    import hashlib
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "derive_gate_model.py"
    spec = importlib.util.spec_from_file_location("derive_gate_model", path)
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    rebuilt = derive.derive(onnx.load(str(ORIGINAL_MODEL))).SerializeToString()
    assert hashlib.sha256(rebuilt).hexdigest() == gate.model_sha256()
    readme = (Path(gate.__file__).parent / "silero" / "README.md").read_text(encoding="utf-8")
    assert hashlib.sha256(ORIGINAL_MODEL.read_bytes()).hexdigest() in readme


# ---------------------------------------------------------------- corpora


@pytest.mark.corpus
@pytest.mark.parametrize("corpus", CORPORA)
def test_clean_corpus_clips_keep_their_speech_windows(corpus):
    import soundfile as sf

    manifest = SHARED_DATA / corpus / "MANIFEST.csv"  # conftest: $REALTIME_SER_DATA or ../shared/data
    if not manifest.exists():
        skip_or_fail(f"corpus {corpus} not found at {manifest.parent} (set REALTIME_SER_DATA)")
    with manifest.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    pick = np.random.default_rng(0).choice(len(rows), size=min(CORPUS_CLIPS, len(rows)), replace=False)
    ref, kept = [], []
    for i in pick:
        x, sr = sf.read(str(manifest.parent / rows[i]["path"]), dtype="float32")
        assert sr == SR and x.ndim == 1
        ws = windows_of(x, WINDOW, HOP)
        analyses = [features.analyze(w.samples) for w in ws]
        ref += [vad.decide(a).speech for a in analyses]
        kept += [r.speech for r in gate.clip_decisions(x, WINDOW, HOP, analyses=analyses)]
    ref, kept = np.array(ref), np.array(kept)
    assert ref.sum() > 0
    share = kept[ref].mean()
    assert share >= KEEP_TARGET, f"{corpus}: {share:.1%} of {ref.sum()} speech windows kept"
