"""Sample conversion and the one streaming resampler (realtime_ser.audio.convert)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_ser.audio.convert import Converter, replace_nonfinite, to_float32, to_mono
from realtime_ser.errors import InputAudioError

SR = 16_000


def stream(conv: Converter, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(conv.process(x[i:i + n]))
        i += n
        k += 1
    out.append(conv.flush())
    return np.concatenate(out)


def dominant_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def test_int_formats_scale_to_unit_range():
    assert to_float32(np.array([-32768, 0, 16384], dtype=np.int16)).tolist() == [-1.0, 0.0, 0.5]
    assert to_float32(np.array([-2**31, 2**30], dtype=np.int32)).tolist() == [-1.0, 0.5]
    assert to_float32(np.array([0, 128, 192], dtype=np.uint8)).tolist() == [-1.0, 0.0, 0.5]
    assert to_float32(np.array([0.25], dtype=np.float64)).dtype == np.float32
    with pytest.raises(InputAudioError):
        to_float32(np.array(["a"]))


def test_mono_is_the_channel_mean():
    block = np.array([[1.0, 0.0], [0.5, -0.5]], dtype=np.float32)
    assert to_mono(block).tolist() == [0.5, 0.0]
    assert to_mono(block[:, :1]).tolist() == [1.0, 0.5]


@pytest.mark.parametrize("channels", range(2, 10))
def test_mono_is_numpys_mean_within_float32_rounding(channels):
    """to_mono's column-wise sum against ``mean(axis=1)``: two implementations of the same arithmetic, so
    within float32 rounding (the rule in docs/testing.md; numpy's SIMD reduction order is its own):
    at most 4 ulps of the mean of the absolute values, on signed zeros, subnormals, huge and ordinary values."""
    rng = np.random.default_rng(channels)
    block = rng.standard_normal((4000, channels)).astype(np.float32)
    block[:50] = -0.0
    block[50:100, 0] = -0.0
    block[100:150, 1:] = -0.0
    block[150:200] = rng.standard_normal((50, channels)).astype(np.float32) * np.float32(1e-40)
    block[200:250] *= np.float32(1e30)
    block[250:300] = rng.integers(-32768, 32767, (50, channels)) / np.float32(32768)
    expected = block.mean(axis=1, dtype=np.float32).astype(np.float64)
    scale = np.abs(block.astype(np.float64)).mean(axis=1)
    bound = 4 * np.finfo(np.float32).eps * scale + 2 * np.finfo(np.float32).smallest_subnormal
    for got, exp, b in ((to_mono(block), expected, bound), (to_mono(block[::2]), expected[::2], bound[::2])):
        err = np.abs(got.astype(np.float64) - exp)
        assert got.dtype == np.float32 and np.all(err <= b), \
            f"worst {np.max(err / np.maximum(b, 1e-300)):.2f} x the bound"
    assert np.all(to_mono(block)[:50] == 0)
    # one code path against itself: exact (determinism)
    assert np.array_equal(to_mono(block[::2]), to_mono(np.ascontiguousarray(block[::2])))


def test_nan_and_inf_become_zero_and_are_counted():
    x = np.array([0.1, np.nan, np.inf, -np.inf, 0.2], dtype=np.float32)
    clean, n = replace_nonfinite(x)
    assert n == 3 and clean.tolist() == pytest.approx([0.1, 0.0, 0.0, 0.0, 0.2])
    conv = Converter(SR)
    out = conv.process(np.stack([x, x], axis=1))
    assert conv.nonfinite == 6 and np.all(np.isfinite(out))


@pytest.mark.parametrize("rate", [7_999, 192_001, 44_100.5])
def test_unsupported_rates_are_refused_with_advice(rate):
    with pytest.raises(InputAudioError, match="8000 to 192000"):
        Converter(rate)


def test_48k_stereo_tone_becomes_16k_mono_at_the_same_pitch_and_time():
    seconds, freq = 3.0, 440.0
    t = np.arange(int(48_000 * seconds)) / 48_000
    left = 0.5 * np.sin(2 * np.pi * freq * t)
    stereo = np.stack([left, left], axis=1).astype(np.float32)
    out = stream(Converter(48_000), stereo, [480, 1024, 4096])
    assert len(out) == int(SR * seconds)
    assert dominant_hz(out, SR) == pytest.approx(freq, abs=1.0)
    # amplitude kept and no time shift: compare with the ideal 16 kHz tone away from the edges
    ideal = 0.5 * np.sin(2 * np.pi * freq * np.arange(len(out)) / SR)
    mid = slice(SR // 2, -SR // 2)
    assert np.max(np.abs(out[mid] - ideal[mid])) < 1e-3


def test_one_channel_of_silence_halves_the_level():
    x = np.stack([np.ones(SR, np.float32) * 0.4, np.zeros(SR, np.float32)], axis=1)
    out = stream(Converter(SR), x, [SR])
    assert np.allclose(out, 0.2)


@pytest.mark.parametrize("rate", [8_000, 11_025, 22_050, 44_100, 48_000, 96_000, 192_000])
def test_every_rate_gives_the_right_length(rate):
    x = np.random.default_rng(rate).standard_normal(rate * 2 + 13).astype(np.float32) * 0.1
    out = stream(Converter(rate), x, [rate // 20])
    assert abs(len(out) - len(x) * SR / rate) <= 1


@settings(max_examples=25, deadline=None)
@given(rate=st.sampled_from([8_000, 22_050, 44_100, 48_000, 96_000]),
       sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=6))
def test_resampler_output_does_not_depend_on_block_split(rate, sizes):
    x = np.random.default_rng(1).standard_normal(rate + 777).astype(np.float32)
    whole = stream(Converter(rate), x, [len(x)])
    split = stream(Converter(rate), x, sizes)
    assert len(split) == len(whole)
    assert abs(len(whole) - len(x) * SR / rate) <= 1
    np.testing.assert_array_equal(split, whole)
