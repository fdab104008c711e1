"""Windowing (realtime_ser.audio.windowing): any split of the stream gives the same windows."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_ser.audio.windowing import Windower, windows_of

WINDOW, HOP = 400, 100


def by_blocks(x: np.ndarray, sizes: list[int]):
    w = Windower(WINDOW, HOP)
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out += list(w.push(x[i:i + n]))
        i += n
        k += 1
    return out + list(w.flush())


def as_tuples(ws):
    return [(w.start, w.end, w.final, w.samples.tobytes()) for w in ws]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 2000), sizes=st.lists(st.integers(1, 700), min_size=1, max_size=8))
def test_any_block_split_gives_the_same_windows(n, sizes):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    assert as_tuples(by_blocks(x, sizes)) == as_tuples(windows_of(x, WINDOW, HOP))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 3000), sizes=st.lists(st.integers(1, 900), min_size=1, max_size=8))
def test_windows_are_the_last_window_samples_of_the_zero_padded_stream(n, sizes):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    padded = np.concatenate([np.zeros(WINDOW, np.float32), x])
    ws = by_blocks(x, sizes)
    assert [w.end for w in ws] == list(range(HOP, n + 1, HOP)) + ([n] if n % HOP else [])
    for w in ws:
        assert w.samples.tobytes() == padded[w.end : w.end + WINDOW].tobytes()
        assert w.start == max(0, w.end - WINDOW)


def test_window_k_ends_at_k_hops_and_holds_the_last_samples():
    x = np.arange(1000, dtype=np.float32)
    ws = windows_of(x, WINDOW, HOP)
    assert [w.end for w in ws] == list(range(HOP, 1001, HOP))
    assert not any(w.final for w in ws)  # 1000 is a multiple of the hop: no extra window
    last = ws[-1]
    np.testing.assert_array_equal(last.samples, x[-WINDOW:])
    np.testing.assert_array_equal(ws[0].samples[:-HOP], 0)  # the stream is preceded by silence


def test_flush_adds_a_final_window_for_the_tail():
    ws = windows_of(np.ones(250, np.float32), WINDOW, HOP)
    assert [(w.end, w.final) for w in ws] == [(100, False), (200, False), (250, True)]
