"""The live terminal dashboard: a Rich renderable fed with the JSON event dicts.

Pure formatting. ``Dashboard.update(event)`` folds one event (``prediction``,
``change`` or ``status``) into an immutable snapshot; ``__rich__`` renders the
latest snapshot. No threads, no I/O: Rich's ``Live`` does the drawing, on stderr.

Thread safety without locks: ``update`` builds a new frozen ``_State`` and swaps
it in with one attribute assignment, and ``__rich__`` reads that attribute once,
so Live's refresh thread never sees a half-updated state.

Use :func:`live_display` (or the same settings by hand): the dashboard must run on
a stderr console with ``redirect_stdout=False``. Rich's default redirects stdout
into the live display, which would swallow the JSON lines that are the product.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

SILENCE = "silence"
"""The smoothed state while there is no speech (no emotion is claimed)."""

TIMELINE_LENGTH = 30
"""How many recent windows the timeline shows."""

BAR_WIDTH = 30
"""Character width of the level meter, and twice the widest probability bar."""

MIN_PROBABILITY_BAR = 4
"""The probability bars shrink with the terminal down to this; the numbers beside them never go."""

FIT_WIDTH, FIT_HEIGHT = 80, 24
"""The terminal the whole dashboard fits in (tests/test_dashboard.py renders it there)."""

LEVEL_FLOOR_DBFS = -60.0
"""The level meter's empty point; 0 dBFS is full scale."""

LEVEL_WARN_DBFS = -12.0
"""Above this the meter turns yellow (loud)."""

LEVEL_CLIP_DBFS = -3.0
"""Above this the meter turns red (close to clipping)."""

REFRESH_PER_SECOND = 8
"""Redraw rate of :func:`live_display`: smooth enough for a 0.5 s hop, cheap on CPU."""

EMOTION_STYLES: Mapping[str, str] = {
    "neutral": "white",
    "calm": "cyan",
    "happy": "yellow",
    "sad": "blue",
    "angry": "red",
    "fearful": "magenta",
    "disgust": "green",
    "surprised": "bright_magenta",
    "boredom": "bright_black",
    SILENCE: "bright_black",
}
"""Colour of each emotion (labels not listed here get ``DEFAULT_STYLE``)."""

DEFAULT_STYLE = "bright_white"
SILENCE_CELL = "·"
"""Timeline cell of a window without speech."""

# Partial-block characters: index i draws i/8 of a character cell.
_EIGHTHS = " ▏▎▍▌▋▊▉"
_FULL = "█"

# A 5-row block-letter font for the big emotion name. Unknown characters render as "?".
_FONT_ROWS = 5
_FONT: Mapping[str, tuple[str, ...]] = {
    "A": (" ██ ", "█  █", "████", "█  █", "█  █"),
    "B": ("███ ", "█  █", "███ ", "█  █", "███ "),
    "C": (" ███", "█   ", "█   ", "█   ", " ███"),
    "D": ("███ ", "█  █", "█  █", "█  █", "███ "),
    "E": ("████", "█   ", "███ ", "█   ", "████"),
    "F": ("████", "█   ", "███ ", "█   ", "█   "),
    "G": (" ███", "█   ", "█ ██", "█  █", " ███"),
    "H": ("█  █", "█  █", "████", "█  █", "█  █"),
    "I": ("███", " █ ", " █ ", " █ ", "███"),
    "J": ("  ██", "   █", "   █", "█  █", " ██ "),
    "K": ("█  █", "█ █ ", "██  ", "█ █ ", "█  █"),
    "L": ("█   ", "█   ", "█   ", "█   ", "████"),
    "M": ("█   █", "██ ██", "█ █ █", "█   █", "█   █"),
    "N": ("█   █", "██  █", "█ █ █", "█  ██", "█   █"),
    "O": (" ██ ", "█  █", "█  █", "█  █", " ██ "),
    "P": ("███ ", "█  █", "███ ", "█   ", "█   "),
    "Q": (" ██ ", "█  █", "█  █", "█ ██", " ███"),
    "R": ("███ ", "█  █", "███ ", "█ █ ", "█  █"),
    "S": (" ███", "█   ", " ██ ", "   █", "███ "),
    "T": ("█████", "  █  ", "  █  ", "  █  ", "  █  "),
    "U": ("█  █", "█  █", "█  █", "█  █", " ██ "),
    "V": ("█   █", "█   █", "█   █", " █ █ ", "  █  "),
    "W": ("█   █", "█   █", "█ █ █", "██ ██", "█   █"),
    "X": ("█   █", " █ █ ", "  █  ", " █ █ ", "█   █"),
    "Y": ("█   █", " █ █ ", "  █  ", "  █  ", "  █  "),
    "Z": ("████", "   █", " ██ ", "█   ", "████"),
    " ": ("  ", "  ", "  ", "  ", "  "),
    "-": ("   ", "   ", "███", "   ", "   "),
    "?": ("███ ", "   █", " ██ ", "    ", " █  "),
}
_LETTER_GAP = " "


def big_text_lines(word: str) -> list[str]:
    """``word`` in the block-letter font, as ``_FONT_ROWS`` lines of equal width."""
    glyphs = [_FONT.get(ch, _FONT["?"]) for ch in word.upper()]
    return [_LETTER_GAP.join(g[row] for g in glyphs) for row in range(_FONT_ROWS)]


class BigText:
    """A word in block letters; falls back to plain bold text when it does not fit."""

    def __init__(self, word: str, style: str) -> None:
        self.word = word
        self.style = style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = big_text_lines(self.word)
        if len(lines[0]) > options.max_width:
            yield Text(self.word.upper(), style=f"bold {self.style}")
            return
        for line in lines:
            yield Text(line, style=self.style)


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A horizontal bar ``width`` cells wide, filled to ``fraction`` (clamped to [0, 1])."""
    if not math.isfinite(fraction):
        fraction = 0.0
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * len(_EIGHTHS))
    full, part = divmod(eighths, len(_EIGHTHS))
    text = _FULL * full + (_EIGHTHS[part] if part else "")
    return text.ljust(width)


def abbreviations(labels: Iterable[str]) -> dict[str, str]:
    """One distinct upper-case letter per label for the timeline (first free letter of its name)."""
    used: set[str] = set()
    result: dict[str, str] = {}
    for label in labels:
        candidates = [c.upper() for c in label if c.isalpha()] + [chr(c) for c in range(ord("A"), ord("Z") + 1)]
        letter = next((c for c in candidates if c not in used), "?")
        used.add(letter)
        result[label] = letter
    return result


def style_for(emotion: str) -> str:
    return EMOTION_STYLES.get(emotion, DEFAULT_STYLE)


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, null, NaN, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class _State:
    """Everything the dashboard shows; replaced as a whole on every update."""

    emotion: str | None = None
    confidence: float | None = None
    probabilities: Mapping[str, float] = field(default_factory=dict)
    raw_probabilities: Mapping[str, float] = field(default_factory=dict)
    speech: bool | None = None
    level_dbfs: float | None = None
    valence: float | None = None
    arousal: float | None = None
    latency_ms: float | None = None
    max_latency_ms: float | None = None
    dropped_blocks: int = 0
    skipped_windows: int = 0
    normalizer_warmup: float | bool | None = None
    callback_max_ms: float | None = None
    queue_depth: int | None = None
    queue_capacity: int | None = None
    model_name: str = ""
    device_name: str = ""
    device_state: str = "ok"  # status events: ok, stalled, lost, waiting, back
    end_reason: str | None = None
    audio_time_s: float = 0.0
    n_predictions: int = 0
    n_changes: int = 0
    timeline: tuple[str, ...] = ()


class Dashboard:
    """The Rich renderable of the live dashboard. Feed it events, hand it to ``Live``."""

    def __init__(self, console: Console, labels: Sequence[str], model_name: str, device_name: str) -> None:
        self.console = console  # kept for callers and sizing; the dashboard itself never prints
        self.labels = tuple(labels)
        self._letters = abbreviations(self.labels)
        self._state = _State(model_name=model_name, device_name=device_name)

    # ---------------------------------------------------------------- updates
    def update(self, event: Mapping[str, Any]) -> None:
        """Fold one event dict into the state. Unknown types and fields are ignored."""
        s = self._state
        changes: dict[str, Any] = {}
        kind = event.get("type")

        if kind == "start":
            for name, key in (("model", "model_name"), ("device", "device_name")):
                if isinstance(event.get(name), str) and event[name]:
                    changes[key] = event[name]
        elif kind == "status" and isinstance(event.get("device_state"), str):
            changes["device_state"] = event["device_state"]
        elif kind == "end" and isinstance(event.get("reason"), str):
            changes["end_reason"] = event["reason"]

        if kind in ("prediction", "change") and isinstance(event.get("emotion"), str):
            changes["emotion"] = event["emotion"]
            changes["confidence"] = _number(event.get("confidence"))
        for name in ("probabilities", "raw_probabilities"):
            value = event.get(name)
            if isinstance(value, Mapping):
                changes[name] = {k: v for k, v in ((k, _number(v)) for k, v in value.items()) if v is not None}
            elif name in event and value is None:  # explicitly none: silence, no model output
                changes[name] = {}
        if isinstance(event.get("speech"), bool):
            changes["speech"] = event["speech"]
        for name in ("level_dbfs", "valence", "arousal", "callback_max_ms"):
            if name in event:
                changes[name] = _number(event[name])
        latency = _number(event.get("latency_ms"))
        if latency is not None:
            changes["latency_ms"] = latency
            changes["max_latency_ms"] = latency if s.max_latency_ms is None else max(s.max_latency_ms, latency)
        for name in ("dropped_blocks", "skipped_windows", "queue_depth", "queue_capacity"):
            count = _number(event.get(name))
            if count is not None:
                changes[name] = int(count)
        warmup = event.get("normalizer_warmup")
        if isinstance(warmup, bool):
            changes["normalizer_warmup"] = warmup
        elif _number(warmup) is not None:
            changes["normalizer_warmup"] = _number(warmup)
        t_end = _number(event.get("t_end", event.get("t")))  # status and end events carry "t"
        if t_end is not None:
            changes["audio_time_s"] = max(s.audio_time_s, t_end)

        if kind == "prediction":
            changes["n_predictions"] = s.n_predictions + 1
            emotion = event.get("emotion")
            speech = event.get("speech")
            silent = emotion == SILENCE or speech is False or not isinstance(emotion, str)
            cell = SILENCE if silent else emotion
            changes["timeline"] = (s.timeline + (cell,))[-TIMELINE_LENGTH:]
        elif kind == "change":
            changes["n_changes"] = s.n_changes + 1

        self._state = replace(s, **changes)

    # -------------------------------------------------------------- rendering
    def __rich__(self) -> Group:
        s = self._state  # one read: the snapshot this frame is drawn from
        body = Table.grid(expand=True, padding=(0, 1))
        body.add_column(ratio=1)
        body.add_column(ratio=1)
        body.add_row(self._emotion_panel(s), self._probability_panel(s))
        # No frame around the whole: its two border rows and four columns are what 80x24 lacks. The
        # program, model and device names are the last panel's last line (a long device name wraps).
        return Group(body, self._input_panel(s), self._stats_panel(s))

    def _emotion_panel(self, s: _State) -> Panel:
        if s.emotion is None:
            content: Any = Text("waiting for audio…", style="dim italic")
        else:
            style = style_for(s.emotion)
            detail = Text(s.emotion, style=f"bold {style}")
            if s.confidence is not None and s.emotion != SILENCE:
                detail.append(f"  confidence {s.confidence:.0%}", style="default")
            affect = Text()
            if s.valence is not None:
                affect.append(f"valence {s.valence:+.2f}  ")
            if s.arousal is not None:
                affect.append(f"arousal {s.arousal:+.2f}")
            content = Group(BigText(s.emotion, style), Text(), detail, affect)
        return Panel(content, title="emotion (smoothed)", border_style=style_for(s.emotion or SILENCE))

    def _probability_panel(self, s: _State) -> Panel:
        return Panel(_ProbabilityRows(self.labels, self._letters, s), title="probabilities",
                     border_style="bright_black")

    def _input_panel(self, s: _State) -> Panel:
        line = Text()
        if s.device_state in ("lost", "waiting"):
            return Panel(Text(f"waiting for {s.device_name} (device lost)", style="bold yellow"),
                         title="input", border_style="yellow")
        if s.speech is None:
            line.append("○ no audio yet ", style="dim")
        elif s.speech:
            line.append("● SPEECH  ", style="bold green")
        else:
            line.append("○ silence ", style="dim")
        line.append(" level ")
        if s.level_dbfs is None:
            line.append(bar(0.0), style="dim")
            line.append("    — dBFS")
        else:
            fraction = (s.level_dbfs - LEVEL_FLOOR_DBFS) / -LEVEL_FLOOR_DBFS
            colour = ("red" if s.level_dbfs > LEVEL_CLIP_DBFS
                      else "yellow" if s.level_dbfs > LEVEL_WARN_DBFS else "green")
            line.append(bar(fraction), style=colour)
            line.append(f" {s.level_dbfs:6.1f} dBFS")
        return Panel(line, title="input", border_style="bright_black")

    def _timeline(self, s: _State) -> Text:
        cells = Text()
        cells.append("  " * (TIMELINE_LENGTH - len(s.timeline)))
        for emotion in s.timeline:
            if emotion == SILENCE:
                cells.append(SILENCE_CELL, style="bright_black")
            else:
                cells.append(self._letters.get(emotion, "?"), style=f"bold black on {style_for(emotion)}")
            cells.append(" ")
        return cells  # the letters are explained in the probabilities panel, silence in the title

    def _stats_panel(self, s: _State) -> Panel:
        """The timeline and the stream's counters in one panel (one border less: the frame fits 80x24)."""
        timing = Text()
        timing.append(f"audio {s.audio_time_s:.1f} s", style="bold")
        timing.append(f" · windows {s.n_predictions} · changes {s.n_changes}")
        if s.latency_ms is None:
            timing.append(" · latency —")
        else:
            timing.append(f" · latency {s.latency_ms:.0f} ms (max {s.max_latency_ms:.0f} ms)")
        health = Text()
        health.append("dropped blocks ")
        health.append(str(s.dropped_blocks), style="bold red" if s.dropped_blocks else "")
        health.append(" · skipped windows ")
        health.append(str(s.skipped_windows), style="bold yellow" if s.skipped_windows else "")
        if s.queue_depth is not None:
            capacity = "?" if s.queue_capacity is None else str(s.queue_capacity)
            health.append(f" · queue {s.queue_depth}/{capacity}")
        state = Text()
        if s.callback_max_ms is not None:
            state.append(f"callback max {s.callback_max_ms:.2f} ms")
        warmup = s.normalizer_warmup
        if isinstance(warmup, bool):
            state.append((" · " if state else "") + "normaliser " + ("warming up" if warmup else "ready"))
        elif warmup is not None:
            state.append((" · " if state else "") + f"normaliser warm-up {warmup:.0%}")
        if s.end_reason is not None:
            state.append(" · " if state else "")
            state.append(f"ended: {s.end_reason}", style="bold")
        names = Text.assemble(("realtime-ser", "bold"), (f" · model {s.model_name} · device {s.device_name}", "dim"))
        lines = [self._timeline(s), timing, health] + ([state] if state else []) + [names]
        title = f"stream · last {TIMELINE_LENGTH} windows, oldest left, {SILENCE_CELL} {SILENCE}"
        return Panel(Group(*lines), title=title, border_style="bright_black")


class _ProbabilityRows:
    """One row per label: its timeline letter and name, bar, smoothed and raw percentages. The bars
    take the width left over, so the numbers stay readable in a narrow terminal (80 columns)."""

    PERCENT = "{:4.0%}"
    RAW = "raw {:4.0%}"
    COLUMN_GAPS = 3
    LETTER_WIDTH = 2  # "N "

    def __init__(self, labels: Sequence[str], letters: Mapping[str, str], state: _State) -> None:
        self.labels = labels
        self.letters = letters
        self.state = state

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        s = self.state
        width = max((len(label) for label in self.labels), default=0)
        fixed = (self.LETTER_WIDTH + width + len(self.PERCENT.format(1.0)) + len(self.RAW.format(1.0))
                 + self.COLUMN_GAPS)
        bar_width = max(MIN_PROBABILITY_BAR, min(BAR_WIDTH // 2, options.max_width - fixed))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True)
        grid.add_column(justify="right", no_wrap=True)
        grid.add_column(justify="right", no_wrap=True, style="dim")
        for label in self.labels:
            p = s.probabilities.get(label)
            raw = s.raw_probabilities.get(label)
            name = Text(self.letters.get(label, "?"), style=f"bold {style_for(label)}")
            name.append(" " + label.ljust(width), style="bold" if label == s.emotion else "")
            grid.add_row(
                name,
                Text(bar(p or 0.0, bar_width), style=style_for(label)),
                "—" if p is None else self.PERCENT.format(p),
                "" if raw is None else self.RAW.format(raw),
            )
        yield grid


def live_display(dashboard: Dashboard, console: Console | None = None,
                 refresh_per_second: float = REFRESH_PER_SECOND) -> Live:
    """A ``Live`` for ``dashboard`` that draws on stderr and leaves stdout (the JSON lines) alone."""
    return Live(
        dashboard,
        console=console if console is not None else dashboard.console,
        refresh_per_second=refresh_per_second,
        redirect_stdout=False,
        redirect_stderr=False,
        transient=False,
    )
