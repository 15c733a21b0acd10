"""Timelines: a recorded trace drawn as an SVG, one lane per task.

The picture a scheduler course draws on the board: time runs left to right,
each task has a lane, and a bar shows what the task was doing then: on the
CPU (running), waiting for the CPU (ready), or blocked, split by what it
waits for (I/O, a timer, or another task: join, kill, a wait channel).
Reading one down a column shows that at most one task runs at a time, which
is what "one CPU" means; reading along a lane shows where a task's time went.

`render_svg` takes a `TraceRecorder` (trace.py) or its intervals and returns
a self-contained SVG document: no scripts, no external styles or fonts, so it
opens in any browser and can be put in a page. Hovering a bar shows its
state, what it waited in, when it started and how long it lasted (an SVG
``<title>``). Each lane is a ``<g class="task" id="task-TID">``.

A stretch too short to see (under a `VirtualClock` running takes no time
at all) is drawn `MIN_BAR` pixels wide, so every visit to the CPU shows.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Union

from .trace import IO, READY, RUNNING, SLEEPING, STATES, WAITING, TraceRecorder

#: Colour and legend text of each state.
COLOURS = {
    RUNNING: "#2ca02c",
    READY: "#f5c342",
    IO: "#1f77b4",
    SLEEPING: "#aec7e8",
    WAITING: "#ff7f0e",
}
LEGEND = {
    RUNNING: "running",
    READY: "ready (waiting for the CPU)",
    IO: "blocked on I/O",
    SLEEPING: "sleeping",
    WAITING: "waiting (join, kill, wait_on)",
}

MIN_BAR = 1.5  # px: the narrowest bar drawn
ROW = 22  # px per lane
BAR = 14  # px: bar height inside a lane
TOP = 52  # px above the first lane: title and time axis
CHAR = 6.6  # px: about one character of the 11 px label font

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # not allowed in XML 1.0


def _esc(text: str) -> str:
    text = _CONTROL.sub("?", text)
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _ticks(span: float) -> tuple[float, float, str]:
    """A round step giving 5 to 11 ticks over ``span`` seconds, and the unit to label them in."""
    raw = span / 10
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if step >= 1:
        return step, 1.0, "s"
    if step >= 1e-3:
        return step, 1e-3, "ms"
    return step, 1e-6, "µs"


def _label(value: float) -> str:
    return f"{round(value, 6):g}"


Records = Union[TraceRecorder, Iterable[Any]]


def render_svg(source: Records, *, width: int = 960, title: str = "yieldos timeline") -> str:
    """The timeline of ``source`` (a `TraceRecorder`, or ``(tid, name, state, start,
    end[, detail])`` records) as an SVG document of ``width`` pixels."""
    records = source.intervals if isinstance(source, TraceRecorder) else list(source)
    names: dict[int, str] = {}
    for record in records:
        names.setdefault(record[0], record[1])
    tids = sorted(names)
    t0 = min((r[3] for r in records), default=0.0)
    t1 = max((r[4] for r in records), default=0.0)
    span = t1 - t0 if t1 > t0 else 1e-6  # nothing took any time: draw a microsecond
    left = 16 + CHAR * max((len(f"{names[t]} ({t})") for t in tids), default=4)
    left = min(max(left, 80.0), 280.0)
    plot = max(width - left - 24, 100.0)
    legend_y = TOP + ROW * len(tids) + 18
    height = legend_y + 16 * len(STATES) + 8

    def x(t: float) -> float:
        return left + (t - t0) / span * plot

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f"<title>{_esc(title)}</title>",
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left:.1f}" y="18" font-size="14" font-weight="bold">{_esc(title)}</text>',
    ]
    # The time axis: a line, round ticks with labels, and light grid lines down the lanes.
    step, unit, unit_name = _ticks(span)
    axis_y, bottom = TOP - 8, TOP + ROW * len(tids)
    out.append('<g class="axis" stroke="#888">')
    out.append(f'<line x1="{left:.1f}" y1="{axis_y}" x2="{left + plot:.1f}" y2="{axis_y}"/>')
    for i in range(int(span / step + 1e-9) + 1):
        tx = x(t0 + i * step)
        out.append(
            f'<line x1="{tx:.1f}" y1="{axis_y - 4}" x2="{tx:.1f}" y2="{bottom}" stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{tx:.1f}" y="{axis_y - 7}" text-anchor="middle" stroke="none"'
            f' fill="#333">{_label(i * step / unit)} {unit_name}</text>'
        )
    out.append("</g>")
    # One lane per task.
    rows = {tid: i for i, tid in enumerate(tids)}
    lanes: dict[int, list[str]] = {tid: [] for tid in tids}
    # Running stretches last, on top: under a virtual clock they are slivers that the
    # ready or blocked stretch beginning at the same instant would otherwise hide.
    for record in sorted(records, key=lambda r: r[2] == RUNNING):
        tid, _, state, start, end = record[:5]
        detail = record[5] if len(record) > 5 else ""
        bx, bw = x(start), max(x(end) - x(start), MIN_BAR)
        tip = f"{state}: {detail}" if detail else state
        tip += f"\nstart {start - t0:.6f} s, lasted {end - start:.6f} s"
        lanes[tid].append(
            f'<rect class="{_esc(state)}" x="{bx:.2f}" y="{TOP + rows[tid] * ROW + 4}"'
            f' width="{bw:.2f}" height="{BAR}" fill="{COLOURS.get(state, "#999")}">'
            f"<title>{_esc(tip)}</title></rect>"
        )
    for tid in tids:
        y = TOP + rows[tid] * ROW
        shade = "#f4f4f4" if rows[tid] % 2 else "#ffffff"
        out.append(f'<g class="task" id="task-{tid}">')
        out.append(
            f'<rect x="0" y="{y}" width="{width}" height="{ROW}" fill="{shade}"'
            ' fill-opacity="0.6"/>'
        )
        out.append(
            f'<text x="{left - 8:.1f}" y="{y + 15}" text-anchor="end">'
            f"{_esc(names[tid])} ({tid})</text>"
        )
        out.extend(lanes[tid])
        out.append("</g>")
    # The legend.
    out.append('<g class="legend">')
    for i, state in enumerate(STATES):
        y = legend_y + 16 * i
        out.append(f'<rect x="{left:.1f}" y="{y}" width="12" height="10" fill="{COLOURS[state]}"/>')
        out.append(f'<text x="{left + 18:.1f}" y="{y + 9}">{_esc(LEGEND[state])}</text>')
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_svg(source: Records, path: str, **options: Any) -> None:
    """Write `render_svg` of ``source`` to ``path`` (options as for `render_svg`)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_svg(source, **options))
