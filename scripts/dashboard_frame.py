"""Render one dashboard frame, as plain text, from recorded JSON-lines events (for the README).

    realtime-ser listen --replay FILE --pace fast --no-dashboard > events.jsonl
    python scripts/dashboard_frame.py events.jsonl --at 6.0 > docs/dashboard.txt

Feeds the events up to audio time ``--at`` (default: all) into the dashboard and prints the frame it
would show then. Live runs carry latency; a replay carries none (shown as "—").
"""

from __future__ import annotations

import argparse
import io
import json
import sys

from rich.console import Console

from realtime_ser.sinks.dashboard import Dashboard

WIDTH = 80


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", help="a file of JSON-lines events from realtime-ser listen")
    parser.add_argument("--at", type=float, default=None, help="stop at this audio time (seconds)")
    parser.add_argument("--device", default=None, help="device name to show instead of the start event's")
    parser.add_argument("--width", type=int, default=WIDTH)
    args = parser.parse_args()

    with open(args.events, encoding="utf-8") as f:
        events = [json.loads(line) for line in f if line.strip()]
    start = next((e for e in events if e.get("type") == "start"), {})
    console = Console(record=True, width=args.width, file=io.StringIO())
    dashboard = Dashboard(console, start.get("labels", []), start.get("model", "?"), start.get("device", "?"))
    for event in events:
        t = event.get("t_end", event.get("t"))
        if args.at is not None and isinstance(t, (int, float)) and t > args.at:
            break
        if event.get("type") == "start" and args.device:
            event = dict(event, device=args.device)
        dashboard.update(event)
    console.print(dashboard)
    sys.stdout.write(console.export_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
