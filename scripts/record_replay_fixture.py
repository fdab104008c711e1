"""Re-record tests/fixtures/replay_events.jsonl: the event lines of a replay of generated audio.

    python scripts/record_replay_fixture.py

Run it (and commit the result) only when the event lines are meant to change: a new shipped model
(models/default.onnx, whose card's onnx_sha256 is recorded beside the lines), new smoothing defaults,
a new feature spec. tests/test_replay_fixture.py compares a fresh replay with these lines, byte for byte.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from replay_fixture import FIXTURE, META, replay_lines  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        lines, sha = replay_lines(Path(tmp))
    FIXTURE.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    META.write_text(json.dumps({"onnx_sha256": sha, "lines": len(lines),
                                "recorded_by": "python scripts/record_replay_fixture.py"}, indent=1) + "\n",
                    encoding="utf-8")
    print(f"wrote {FIXTURE.relative_to(ROOT)} ({len(lines)} lines, model onnx_sha256 {sha[:12]}...)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
