"""The public constructors take their options by keyword only (issue 13): ``Tracker(model, *, ...)``,
``FileSource(path, *, ...)``, ``MicSource(device, *, ...)``, ``StreamProcessor(model, rate, config, *, live)``,
so a reordered or added option can never be passed by position by mistake."""

from __future__ import annotations

import inspect

import pytest

from realtime_ser.api import Tracker
from realtime_ser.audio.sources import FileSource, MicSource
from realtime_ser.core import StreamProcessor

POSITIONAL = {Tracker: ["model"], FileSource: ["path"], MicSource: ["device"],
              StreamProcessor: ["model", "source_rate", "config"]}


@pytest.mark.parametrize("cls", list(POSITIONAL), ids=lambda c: c.__name__)
def test_options_are_keyword_only(cls):
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert positional == POSITIONAL[cls]
    assert all(p.kind == p.KEYWORD_ONLY for p in params[len(positional):])


def test_an_option_by_position_is_refused(tmp_path):
    with pytest.raises(TypeError):
        FileSource(tmp_path / "x.wav", "fast")
