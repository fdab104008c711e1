"""No behaviour change: a replay's event lines, byte for byte, against lines recorded before a refactor.

The fixture (tests/fixtures/replay_events.jsonl) was recorded with the shipped model; when the model,
the smoothing defaults or the feature spec change on purpose, re-record it with
``python scripts/record_replay_fixture.py`` and commit it (the diff is the behaviour change).
"""

from __future__ import annotations

import difflib
import json

import pytest

from replay_fixture import FIXTURE, META, RECORD_COMMAND, replay_lines, shipped_sha256


def test_replay_event_lines_are_byte_identical_to_the_recorded_ones(tmp_path):
    meta = json.loads(META.read_text(encoding="utf-8"))
    sha = shipped_sha256()
    if sha != meta["onnx_sha256"]:
        pytest.fail(f"the shipped model changed (card onnx_sha256 {sha[:12]}..., the fixture was recorded with "
                    f"{meta['onnx_sha256'][:12]}...): re-record the fixture with `{RECORD_COMMAND}` and commit it",
                    pytrace=False)
    expected = FIXTURE.read_text(encoding="utf-8").splitlines()
    lines, _ = replay_lines(tmp_path)
    if lines != expected:
        diff = "\n".join(list(difflib.unified_diff(expected, lines, "recorded", "now", lineterm="", n=0))[:20])
        pytest.fail(f"the replay's event lines differ from the recorded ones (if intended, re-record with "
                    f"`{RECORD_COMMAND}`):\n{diff}", pytrace=False)
