#!/usr/bin/env bash
# The wheel works with no checkout present: build it, install it into a fresh venv, run predict and
# listen --replay on generated audio from a temporary directory outside the checkout.
#
#   bash scripts/wheel_smoke.sh
#
# The venv uses --system-site-packages (the dependencies are already installed; nothing is downloaded),
# but realtime_ser itself must come from the wheel: the script checks where it was imported from.
# Set PYTHON to choose the interpreter. Exit code: 0 ok, 1 a step failed (the step says which).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_PROGRESS_BAR=off

work=$(mktemp -d "${TMPDIR:-/tmp}/realtime-ser-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "wheel_smoke: $*" >&2; exit 1; }

echo "wheel_smoke: python -m build --wheel" >&2
"$PYTHON" -m build --wheel --outdir "$work/dist" . >"$work/build.log" 2>&1 || { tail -30 "$work/build.log" >&2; fail "build failed"; }
wheel=$(ls "$work"/dist/realtime_ser-*.whl)
"$PYTHON" -m zipfile -l "$wheel" >"$work/contents.txt"  # not piped into grep -q: pipefail would see SIGPIPE
for member in realtime_ser/models/default.onnx realtime_ser/features/spec.py realtime_ser/silero/silero_vad_16k_matmul.onnx \
        realtime_ser/silero/LICENSE realtime_ser/sinks/overlay.html; do
    grep -q "$member" "$work/contents.txt" || fail "the wheel has no $member"
done

"$PYTHON" -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install -q --no-deps "$wheel"

cd "$work"  # outside the checkout: nothing of it on sys.path
where=$("$work/venv/bin/python" -c 'import realtime_ser, realtime_ser.model as m; print(realtime_ser.__file__); print(m.DEFAULT_MODEL)')
case "$where" in "$work/venv/"*"$work/venv/"*) ;; *) fail "realtime_ser or its model did not come from the wheel: $where";; esac
"$work/venv/bin/python" - <<'PY'
import numpy as np, soundfile as sf
from realtime_ser.bench import formant_voice  # a talker the speech gate passes (it refuses plain tones)
sr = 16_000
sf.write("clip.flac", np.concatenate([np.zeros(sr // 2), formant_voice(160.0, 4.0)]).astype(np.float32), sr)
PY
"$work/venv/bin/realtime-ser" predict clip.flac >predict.jsonl || fail "predict exited $?"
"$work/venv/bin/realtime-ser" listen --replay clip.flac --pace fast --no-dashboard >listen.jsonl || fail "listen --replay exited $?"
"$work/venv/bin/python" - <<'PY'
import json
p = [json.loads(l) for l in open("predict.jsonl")]
e = [json.loads(l) for l in open("listen.jsonl")]
assert len(p) == 1 and p[0]["speech_windows"] > 0 and p[0]["probabilities"], p  # the gate passed it, the classifier ran
assert e[0]["type"] == "start" and e[-1]["type"] == "end" and e[-1]["reason"] == "end_of_input", (e[0], e[-1])
assert sum(x["type"] == "prediction" for x in e) == 9, [x["type"] for x in e]
print(f"wheel_smoke: ok: predict -> {p[0]['emotion']} ({p[0]['speech_windows']} speech windows), listen --replay -> {len(e)} lines")
PY
