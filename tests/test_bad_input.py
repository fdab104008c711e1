"""Bad and unusual audio files for `listen --replay` and `predict` (issue 5 §1): either correct
results or one InputAudioError naming the problem; never another exception."""

from __future__ import annotations

import os
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf

from realtime_ser.api import Tracker, predict_file
from realtime_ser.errors import InputAudioError

from helpers import LOW_F0, load_schema, voice, write_audio

SR = 16_000
CLIP_S = 1.5


def clip(sr: int = SR, channels: int = 1) -> np.ndarray:
    x = voice(LOW_F0, CLIP_S, sr=sr)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


@pytest.fixture(scope="module")
def tracker(tiny_model):
    return Tracker(model=tiny_model, status_every_s=0.5)


def replay(tracker, path):
    events = list(tracker.replay(path, pace="fast"))
    validator = jsonschema.Draft202012Validator(load_schema())
    for e in events:
        validator.validate(e)
    return events


def preds(events):
    return [e for e in events if e["type"] == "prediction"]


# ---------------------------------------------------------------- files that must be refused


def make_bad(kind: str, tmp_path):
    p = tmp_path / "bad.wav"
    if kind == "missing":
        return tmp_path / "nope.wav", "no such file"
    if kind == "directory":
        return tmp_path, "directory"
    if kind == "zero bytes":
        p.write_bytes(b"")
        return p, "empty"
    if kind == "random bytes":
        p.write_bytes(np.random.default_rng(0).bytes(5000))
        return p, "not an audio file"
    if kind == "header only":
        sf.write(str(p), np.zeros(0, np.float32), SR)
        return p, "no audio samples"
    if kind == "text":
        p.write_text("hello, I am not audio\n")
        return p, "not an audio file"
    raise AssertionError(kind)


BAD = ["missing", "directory", "zero bytes", "random bytes", "header only", "text"]


@pytest.mark.parametrize("kind", BAD)
def test_unreadable_files_give_one_clear_error(tracker, tmp_path, kind):
    path, words = make_bad(kind, tmp_path)
    with pytest.raises(InputAudioError, match=words) as err:
        list(tracker.replay(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(InputAudioError):
        predict_file(path, model=tracker.model)


def test_unreadable_permissions(tracker, tmp_path, monkeypatch):
    p = write_audio(tmp_path / "locked.wav", clip())
    p.chmod(0)
    if os.geteuid() == 0:  # root (as in CI) reads every file: have the OS's access check refuse instead
        from realtime_ser.audio import sources

        real_access = os.access
        monkeypatch.setattr(sources.os, "access",
                            lambda path, mode: False if Path(path) == p else real_access(path, mode))
    with pytest.raises(InputAudioError, match="permission"):
        list(tracker.replay(p))


def test_unsupported_rate_is_refused(tracker, tmp_path):
    p = write_audio(tmp_path / "slow.wav", np.zeros(4000, np.float32), 4000)
    with pytest.raises(InputAudioError, match="4000 Hz"):
        list(tracker.replay(p))


def test_truncated_file_gives_what_is_there(tracker, tmp_path):
    p = write_audio(tmp_path / "full.wav", clip(), subtype="PCM_16")
    data = p.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])  # the header still promises the full length
    try:
        events = replay(tracker, cut)
    except InputAudioError as e:  # acceptable too: one clear line
        assert "truncated" in str(e) or "damaged" in str(e)
        return
    assert events[-1]["reason"] == "end_of_input"
    assert preds(events)[-1]["t_end"] == pytest.approx(CLIP_S / 2, abs=0.01)


# ---------------------------------------------------------------- files that must work


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_sample_formats(tracker, tmp_path, subtype):
    p = write_audio(tmp_path / f"{subtype}.wav", clip(), subtype=subtype)
    ps = preds(replay(tracker, p))
    assert len(ps) == 3 and ps[-1]["emotion"] == "sad"


@pytest.mark.parametrize("fmt", ["flac", "ogg"])
def test_flac_and_ogg(tracker, tmp_path, fmt):
    p = write_audio(tmp_path / f"c.{fmt}", clip())
    ps = preds(replay(tracker, p))
    assert [q["t_end"] for q in ps] == [0.5, 1.0, 1.5] and ps[-1]["speech"]
    if fmt == "flac":  # lossless: exactly what the tiny model was trained on (Vorbis alters the timbre)
        assert ps[-1]["emotion"] == "sad"


@pytest.mark.parametrize("rate", [8_000, 11_025, 22_050, 44_100, 48_000, 96_000, 192_000])
def test_sample_rates(tracker, tmp_path, rate):
    p = write_audio(tmp_path / f"r{rate}.wav", clip(sr=rate), rate)
    ps = preds(replay(tracker, p))
    duration = sf.info(str(p)).frames / rate  # not always exactly 1.5 s: a final window covers the rest
    assert [q["t_end"] for q in ps][:3] == [0.5, 1.0, 1.5] and len(ps) == 3 + (duration * SR > 1.5 * SR)
    assert ps[-1]["t_end"] == pytest.approx(duration, abs=1e-3) and ps[-1]["speech"]


@pytest.mark.parametrize("channels", [1, 2, 3, 6, 8])
def test_channel_counts(tracker, tmp_path, channels):
    p = write_audio(tmp_path / f"c{channels}.wav", clip(channels=channels))
    events = replay(tracker, p)
    assert events[0]["source_channels"] == channels
    assert preds(events)[-1]["emotion"] == "sad"


def test_nan_and_inf_samples_are_zeroed_and_counted(tracker, tmp_path):
    x = clip()
    x[100:110] = np.nan
    x[2000] = np.inf
    x[3000] = -np.inf
    events = replay(tracker, write_audio(tmp_path / "nan.wav", x, subtype="FLOAT"))
    status = [e for e in events if e["type"] == "status"]
    assert status[-1]["nonfinite_samples"] == 12
    assert preds(events)[-1]["emotion"] == "sad"


@pytest.mark.parametrize("kind", ["dc offset", "clipping"])
def test_dc_offset_and_clipping(tracker, tmp_path, kind):
    x = clip()
    x = x + 0.3 if kind == "dc offset" else np.clip(x * 20, -1, 1)
    ps = preds(replay(tracker, write_audio(tmp_path / "x.wav", x.astype(np.float32), subtype="FLOAT")))
    assert len(ps) == 3 and ps[-1]["speech"]


def test_digital_silence(tracker, tmp_path):
    ps = preds(replay(tracker, write_audio(tmp_path / "z.wav", np.zeros(SR, np.float32))))
    assert [p["emotion"] for p in ps] == ["silence", "silence"]


def test_clip_shorter_than_a_window(tracker, tmp_path):
    p = write_audio(tmp_path / "short.wav", voice(LOW_F0, 0.7))
    ps = preds(replay(tracker, p))
    assert [q["t_end"] for q in ps] == [0.5, 0.7] and ps[-1]["t_start"] == 0.0
    assert predict_file(p, model=tracker.model)["speech_s"] > 0


# ---------------------------------------------------------------- names and file kinds (issue 12 §2)

NAME_MAX_BYTES = 255  # Linux NAME_MAX
LONG_PATH_CHARS = 1100  # beyond libsndfile's 1024-byte name buffer, within PATH_MAX


def test_a_fifo_is_not_a_regular_file(tracker, tmp_path):
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    with pytest.raises(InputAudioError, match="not a regular file.*FIFO") as err:
        list(tracker.replay(fifo))  # must not block waiting for a writer, nor say "empty"
    assert "empty" not in str(err.value)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_not_a_regular_file(tracker, device):
    with pytest.raises(InputAudioError, match="not a regular file.*character device"):
        predict_file(device, model=tracker.model)


def test_a_pipe_is_not_a_regular_file(tracker):
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(InputAudioError, match="not a regular file"):
            predict_file(f"/proc/self/fd/{read_end}", model=tracker.model)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_an_empty_name_says_so(tracker):
    with pytest.raises(InputAudioError, match="file name is empty") as err:
        list(tracker.replay(""))
    assert "directory" not in str(err.value)


def test_a_name_component_over_255_bytes_gives_the_true_reason(tracker, tmp_path):
    p = tmp_path / ("n" * (NAME_MAX_BYTES + 10) + ".wav")
    with pytest.raises(InputAudioError, match="file name too long"):
        predict_file(p, model=tracker.model)


def test_a_path_of_1100_characters_is_read(tracker, tmp_path):
    """Each component is legal; only the whole path is long: it is a good file and must be read."""
    d = tmp_path
    while len(str(d)) < LONG_PATH_CHARS:
        d = d / ("d" * 200)
    d.mkdir(parents=True)
    p = d / "long.wav"
    os.rename(write_audio(tmp_path / "short.wav", clip()), p)  # libsndfile could not even write that name
    assert len(str(p)) >= LONG_PATH_CHARS
    ps = preds(replay(tracker, p))
    assert len(ps) == 3 and ps[-1]["emotion"] == "sad"


def test_a_name_that_is_not_utf8_is_read_and_shown_readably(tracker, tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9 \xff.wav"
    name = os.fsdecode(raw)
    os.rename(write_audio(tmp_path / "plain.wav", clip()), name)  # as Python gives it from argv: surrogate escapes
    events = replay(tracker, name)
    assert preds(events)[-1]["emotion"] == "sad"
    assert events[0]["device"].endswith("caf\\xe9 \\xff.wav")  # shown, and valid JSON text, not lone surrogates
    with pytest.raises(InputAudioError) as err:
        predict_file(os.fsdecode(raw[:-4] + b".nope.wav"), model=tracker.model)
    assert "no such file" in str(err.value) and "\\xe9" in str(err.value)
