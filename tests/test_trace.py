"""Tracing and timelines (kernel/trace.py, kernel/timeline.py).

A small program runs under a VirtualClock, so each task's state intervals are
exact and asserted whole; then the Chrome trace and the SVG made from them.
"""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET

import pytest

import kernel
from kernel.timeline import LEGEND, MIN_BAR, render_svg, write_svg
from kernel.trace import (
    IO,
    READY,
    RUNNING,
    SLEEPING,
    STATES,
    WAITING,
    TraceRecorder,
    blocked_state,
    chrome_traces,
)
from kernel.traps import Recv
from syscalls import join, kill, recv, sched_yield, send, sleep, spawn, wait_on

SVG = "{http://www.w3.org/2000/svg}"


def sleeper():
    yield sleep(0.5)


def reader(sock):
    return (yield recv(sock, 10))


def cruncher(clock):
    clock.advance(0.25)  # 0.25 s of "computing"
    yield sched_yield()
    clock.advance(0.125)


def waiter():
    yield wait_on("never woken")


def main(clock, a, b):
    yield spawn(sleeper)
    r = yield spawn(reader, b)
    c = yield spawn(cruncher, clock)
    w = yield spawn(waiter)
    yield join(c)
    yield sleep(0.5)
    yield send(a, b"x")
    yield kill(w)
    return (yield join(r))


# Per task, (state, start, end): every stretch of its life, in order.
EXPECTED = {
    1: [
        (READY, 0.0, 0.0),
        (RUNNING, 0.0, 0.0),
        (WAITING, 0.0, 0.375),  # join(cruncher), which computes 0.375 s in all
        (READY, 0.375, 0.375),
        (RUNNING, 0.375, 0.375),
        (SLEEPING, 0.375, 0.875),
        (READY, 0.875, 0.875),
        (RUNNING, 0.875, 0.875),
        (WAITING, 0.875, 0.875),  # kill(waiter): until it has exited
        (READY, 0.875, 0.875),
        (RUNNING, 0.875, 0.875),
    ],
    2: [(READY, 0.0, 0.0), (RUNNING, 0.0, 0.0), (SLEEPING, 0.0, 0.5), (READY, 0.5, 0.5),
        (RUNNING, 0.5, 0.5)],
    3: [(READY, 0.0, 0.0), (RUNNING, 0.0, 0.0), (IO, 0.0, 0.875), (READY, 0.875, 0.875),
        (RUNNING, 0.875, 0.875)],
    4: [(READY, 0.0, 0.0), (RUNNING, 0.0, 0.25), (READY, 0.25, 0.25), (RUNNING, 0.25, 0.375)],
    5: [(READY, 0.0, 0.25),  # the cruncher had the CPU first
        (RUNNING, 0.25, 0.25), (WAITING, 0.25, 0.875), (READY, 0.875, 0.875),
        (RUNNING, 0.875, 0.875)],
}  # fmt: skip
NAMES = {1: "main", 2: "sleeper", 3: "reader", 4: "cruncher", 5: "waiter"}


def record(**options) -> TraceRecorder:
    clock = kernel.VirtualClock()
    recorder = TraceRecorder(**options)
    a, b = socket.socketpair()
    with a, b, kernel.Kernel(clock=clock) as k:
        k.add_instrument(recorder)
        assert k.run(main, clock, a, b) == b"x"
    return recorder


@pytest.fixture(scope="module")
def recorder() -> TraceRecorder:
    return record(traps=True)


def test_intervals_exact(recorder):
    by_task = {
        tid: [(i.state, i.start, i.end) for i in recorder.intervals if i.tid == tid]
        for tid in NAMES
    }
    assert by_task == EXPECTED
    assert len(recorder.intervals) == sum(len(v) for v in EXPECTED.values())
    assert recorder.names == NAMES
    for interval in recorder.intervals:
        assert interval.name == NAMES[interval.tid]
        tid, name, state, start, end, detail = interval  # a plain record too
        assert bool(detail) == (state in (IO, SLEEPING, WAITING))
    details = {(i.tid, i.state): i.detail for i in recorder.intervals if i.detail}
    assert details[(3, IO)].startswith("recv(fd=")
    assert details[(2, SLEEPING)] == "sleep(0.5)"
    assert details[(5, WAITING)] == "wait_on('never woken')"


def test_intervals_are_in_the_order_they_began(recorder):
    starts = [i.start for i in recorder.intervals]
    assert starts == sorted(starts)


def test_events(recorder):
    lifecycle = [(e.tid, e.name, e.time) for e in recorder.events if e.kind == "task"]
    assert lifecycle == [
        (1, "spawn", 0.0),
        (2, "spawn", 0.0),
        (3, "spawn", 0.0),
        (4, "spawn", 0.0),
        (5, "spawn", 0.0),
        (4, "exit", 0.375),
        (2, "exit", 0.5),
        (5, "exit", 0.875),
        (3, "exit", 0.875),
        (1, "exit", 0.875),
    ]
    traps = [(e.tid, e.name) for e in recorder.events if e.kind == "trap" and e.tid == 1]
    assert traps == [(1, n) for n in ["spawn"] * 4 + ["join", "sleep", "send", "kill", "join"]]
    exits = {e.tid: e.args for e in recorder.events if e.name == "exit"}
    assert exits[1] == {"result": 'b"x"'}
    assert exits[5] == {"exception": "Cancelled"}
    spawns = {e.tid: e.args for e in recorder.events if e.name == "spawn" and e.kind == "task"}
    assert spawns[1] == {} and spawns[2] == {"parent": "1"}


def test_no_trap_events_unless_asked():
    assert {e.kind for e in record().events} == {"task"}


def test_blocked_states():
    a, b = socket.socketpair()
    with a, b:
        assert blocked_state(Recv(a, 1)) == IO
    assert blocked_state(sleep(1)) == SLEEPING
    assert blocked_state(wait_on("x")) == WAITING


def test_open_intervals_end_now():
    def main(clock, recorder):
        clock.advance(2.0)
        last = recorder.intervals[-1]
        assert (last.tid, last.state, last.start, last.end) == (1, RUNNING, 0.0, 2.0)
        yield sleep(1)

    clock = kernel.VirtualClock()
    recorder = TraceRecorder()
    with kernel.Kernel(clock=clock) as k:
        k.add_instrument(recorder)
        k.run(main, clock, recorder)
    assert [i.state for i in recorder.intervals] == [READY, RUNNING, SLEEPING, READY, RUNNING]


# ── Chrome trace ─────────────────────────────────────────────────────────


def test_chrome_trace_is_valid(recorder, tmp_path):
    path = tmp_path / "run.json"
    recorder.write_chrome(str(path))
    with open(path) as f:
        doc = json.load(f)
    assert doc == json.loads(json.dumps(recorder.chrome_trace()))
    assert doc["displayTimeUnit"] == "ms"
    assert doc["otherData"]["clock"] == "virtual"
    events = doc["traceEvents"]
    for event in events:
        assert {"ph", "ts", "pid", "tid", "name"} <= set(event), event
        assert event["pid"] == 1
        if event["ph"] == "X":
            assert event["dur"] >= 0
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert names == {tid: f"{name} ({tid})" for tid, name in NAMES.items()}
    assert events[0]["ph"] == "M" and events[0]["args"]["name"] == "yieldos kernel"
    for tid, expected in EXPECTED.items():
        complete = [e for e in events if e["ph"] == "X" and e["tid"] == tid]
        got = [(e["name"], e["ts"], e["ts"] + e["dur"]) for e in complete]
        assert got == [(s, a * 1e6, b * 1e6) for s, a, b in expected]
    # Within a task, instants come in order with the stretches: spawned before it is ready.
    lane = [(e["ph"], e["name"]) for e in events if e["tid"] == 4 and e["ph"] != "M"]
    assert lane[:2] == [("i", "spawn"), ("X", "ready")]
    assert lane[-2:] == [("X", "running"), ("i", "exit")]
    ts = [e["ts"] for e in events if e["ph"] != "M"]
    assert ts == sorted(ts)


def test_chrome_traces_of_several_kernels(recorder):
    other = record()
    doc = chrome_traces([recorder, other])
    pids = {e["pid"] for e in doc["traceEvents"]}
    assert pids == {1, 2}
    processes = [e["args"]["name"] for e in doc["traceEvents"] if e["name"] == "process_name"]
    assert processes == ["yieldos kernel 1", "yieldos kernel 2"]


def test_real_clock_trace():
    recorder = TraceRecorder()
    with kernel.Kernel() as k:
        k.add_instrument(recorder)
        k.run(sleeper)
    assert recorder.chrome_trace()["otherData"]["clock"] == "real"
    assert [i.state for i in recorder.intervals] == [READY, RUNNING, SLEEPING, READY, RUNNING]
    assert all(i.end >= i.start for i in recorder.intervals)
    assert all(e["ts"] >= 0 for e in recorder.chrome_trace()["traceEvents"])


# ── SVG timeline ─────────────────────────────────────────────────────────


def lanes(svg: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    return {g.get("id"): g for g in root.iter(SVG + "g") if g.get("class") == "task"}


def test_svg_has_a_lane_per_task_with_its_states(recorder):
    svg = render_svg(recorder, title="the test program")
    rows = lanes(svg)
    assert sorted(rows) == [f"task-{tid}" for tid in NAMES]
    for tid, expected in EXPECTED.items():
        row = rows[f"task-{tid}"]
        assert row.find(SVG + "text").text == f"{NAMES[tid]} ({tid})"
        bars = [r for r in row.iter(SVG + "rect") if r.get("class")]
        assert sorted(b.get("class") for b in bars) == sorted(s for s, _, _ in expected)
        for bar in bars:
            tip = bar.find(SVG + "title").text
            assert tip.startswith(bar.get("class"))
            assert "start " in tip and "lasted " in tip
            assert float(bar.get("width")) >= MIN_BAR
    # Zero-length stretches are drawn MIN_BAR wide; the cruncher's 0.25 s much wider.
    widths = {float(r.get("width")) for r in rows["task-4"].iter(SVG + "rect") if r.get("class")}
    assert MIN_BAR in widths and max(widths) > 100
    root = ET.fromstring(svg)
    assert root.find(SVG + "title").text == "the test program"
    texts = [t.text for t in root.iter(SVG + "text")]
    for state in STATES:
        assert LEGEND[state] in texts
    ticks = [t.text for g in root.iter(SVG + "g") if g.get("class") == "axis" for t in g]
    ticks = [t for t in ticks if t]
    assert ticks == ["0 ms", "100 ms", "200 ms", "300 ms", "400 ms", "500 ms", "600 ms",
                     "700 ms", "800 ms"]  # fmt: skip


def test_svg_from_plain_records(tmp_path):
    records = [
        (1, "a", RUNNING, 10.0, 30.0),
        (2, 'b<&>"\x01', WAITING, 15.0, 30.0, "join(<tid 1 a>)"),
        (2, 'b<&>"\x01', "mystery", 20.0, 21.0),
    ]
    path = tmp_path / "t.svg"
    write_svg(records, str(path), width=400)
    svg = path.read_text()
    rows = lanes(svg)
    assert rows["task-2"].find(SVG + "text").text == 'b<&>"? (2)'
    tip = rows["task-2"].find(SVG + "rect[@class='waiting']/" + SVG + "title").text
    assert tip == "waiting: join(<tid 1 a>)\nstart 5.000000 s, lasted 15.000000 s"
    root = ET.fromstring(svg)
    assert root.get("width") == "400"
    ticks = [t.text for g in root.iter(SVG + "g") if g.get("class") == "axis" for t in g if t.text]
    assert ticks == ["0 s", "2 s", "4 s", "6 s", "8 s", "10 s", "12 s", "14 s", "16 s", "18 s",
                     "20 s"]  # fmt: skip


def test_svg_of_tiny_and_empty_traces():
    rows = lanes(render_svg([(1, "t", RUNNING, 0.0, 4e-5)]))
    assert list(rows) == ["task-1"]
    root = ET.fromstring(render_svg([(1, "t", RUNNING, 0.0, 4e-5)]))
    ticks = [t.text for g in root.iter(SVG + "g") if g.get("class") == "axis" for t in g if t.text]
    assert ticks[:3] == ["0 µs", "5 µs", "10 µs"]
    assert lanes(render_svg([])) == {}
    assert lanes(render_svg([(7, "still", READY, 3.0, 3.0)])).keys() == {"task-7"}
