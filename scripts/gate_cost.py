"""The speech gate's cost with Silero's original model and with the shipped (matmul) one, in one run.

    python scripts/gate_cost.py [--seconds 60] [--passes 6]

Both gates (``gate.SpeechGate``, the same code) decide the windows of a generated talker
(``bench.formant_voice``) in stream order, in interleaved passes (the first dropped as warm-up);
``time.thread_time`` around each ``decide``. Prints one JSON line: CPU ms per window (median, p95)
for each model, their ratio, and whether every decision agreed. The original model is
``tests/data/silero_vad_16k_sequence.onnx`` (Silero's, unchanged; docs/gate.md, Cost).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from realtime_ser import features, gate
from realtime_ser.audio.windowing import windows_of
from realtime_ser.bench import formant_voice

ORIGINAL = Path(__file__).resolve().parent.parent / "tests" / "data" / "silero_vad_16k_sequence.onnx"
WINDOW, HOP = 32_000, 8_000  # the shipped model's 2 s window, 0.5 s hop
VOICE_F0 = 140.0
MS = 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--passes", type=int, default=6)
    args = ap.parse_args()
    ws = windows_of(formant_voice(VOICE_F0, args.seconds), WINDOW, HOP)
    analyses = [features.analyze(w.samples) for w in ws]
    gates = {"original": gate.SpeechGate(model_path=ORIGINAL), "shipped": gate.SpeechGate()}
    cpu: dict[str, list[float]] = {k: [] for k in gates}
    decisions: dict[str, list] = {}
    for i in range(args.passes + 1):
        for name, g in gates.items():
            g.reset()
            out = []
            for w, a in zip(ws, analyses, strict=True):
                t0 = time.thread_time()
                out.append(g.decide(w, a))
                if i:
                    cpu[name].append(time.thread_time() - t0)
            decisions[name] = out
    med = {k: float(np.median(v)) * MS for k, v in cpu.items()}
    print(json.dumps({**{f"{k}_cpu_ms_median": round(v, 3) for k, v in med.items()},
                      **{f"{k}_cpu_ms_p95": round(float(np.percentile(v, 95)) * MS, 3) for k, v in cpu.items()},
                      "ratio": round(med["original"] / med["shipped"], 2),
                      "same_decisions": ([r.speech for r in decisions["original"]]
                                         == [r.speech for r in decisions["shipped"]]),
                      "max_prob_max_diff": float(max(abs(a.max_prob - b.max_prob) for a, b in
                                                     zip(decisions["original"], decisions["shipped"], strict=True))),
                      "windows_timed": len(cpu["shipped"])}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
