"""bench/soak.py, quick: 100 connections x 20,000 messages and 2,000 connect/close cycles.

The full soak (``python3 -m bench.soak``: 1,000 connections, a million messages,
100,000 cycles) takes half a minute or more and is run by hand. Here the same program runs
with small sizes, under the interpreter running the tests, and its criteria are
checked again from its JSON figures. Then the criteria alone, on made-up figures:
each one fails when what it guards goes wrong, and the program then exits 1.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from bench import soak
from conftest import REPO
from syscalls import sleep

CONNECTIONS, MESSAGES, CHURN = 100, 20_000, 2_000
QUICK = ["--connections", str(CONNECTIONS), "--messages", str(MESSAGES), "--churn", str(CHURN)]
IDLE = {"server_main": 1, "serve": 1}
#: Seconds before conftest's watchdog calls a test hung: the quick soak needs about
#: 2 s on an idle machine (two processes: server and clients), several times that
#: on a loaded one.
HANG_SECONDS = 120.0


def test_the_quick_soak_passes_every_check(tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.soak", *QUICK, "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS - 10,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.rstrip().endswith("PASSED")
    report = json.loads(out.read_text())
    assert report["exit"] == 0 and report["stderr"] == ""
    start = report["start"]
    assert start["tasks"] == IDLE
    messages, churn = report["phases"]
    assert (messages["name"], messages["total"]) == ("messages", MESSAGES)
    assert (churn["name"], churn["total"]) == ("churn", CHURN)
    for phase in (messages, churn):
        assert phase["done"] == phase["total"]
        samples = phase["samples"]
        assert len(samples) == soak.MARKS + 1
        assert samples[-1]["done"] == phase["total"]
        warm, last = samples[soak.WARMUP_MARK]["rss_mib"], samples[-1]["rss_mib"]
        slack = max(soak.RSS_SLACK_MIB, warm * soak.RSS_SLACK_PCT / 100)
        assert last <= warm + slack, f"{phase['name']}: RSS grew from {warm} to {last} MiB"
        assert phase["start_fds"] == phase["end_fds"] == start["fds"]
        assert phase["census_end"] == IDLE
    # While the messages flow, every connection is one fd and one handle task, no more.
    assert {s["fds"] for s in messages["samples"]} == {start["fds"] + CONNECTIONS}
    busy = dict(IDLE, handle=CONNECTIONS)
    assert messages["census_open"] == messages["census_last"] == busy
    assert all(check["ok"] for check in report["checks"]) and report["ok"]


# ── The criteria, on made-up figures ─────────────────────────────────────────


def clean_run() -> dict:
    """The figures of a perfect run of 10 connections, 1,000 messages and 100 cycles."""
    phases = []
    for name, total in (("messages", 1000), ("churn", 100)):
        phase = soak.Phase(name, total, start_fds=8)
        phase.samples = [
            soak.Sample(total * i // soak.MARKS, 0.0, 20.0, 8) for i in range(soak.MARKS + 1)
        ]
        phase.done, phase.end_fds, phase.census_end = total, 8, dict(IDLE)
        phases.append(phase)
    phases[0].census_open, phases[0].census_last = dict(IDLE, handle=10), dict(IDLE, handle=10)
    start = {"rss_mib": 18.0, "fds": 8, "tasks": dict(IDLE)}
    return {"start": start, "phases": phases, "exit": 0, "stderr": ""}


ARGS = soak.parse_args(["--connections", "10", "--messages", "1000", "--churn", "100"])


def failed(run: dict) -> list[str]:
    return [what for what, ok, _ in soak.checks(run, ARGS) if not ok]


def test_a_clean_run_passes():
    assert failed(clean_run()) == []


def grow(run, mib):
    run["phases"][1].samples[-1].rss_mib += mib


def leak_fd(run):
    run["phases"][0].end_fds += 1


def leave_a_handle(run):
    run["phases"][1].census_end["handle"] = 1


def lose_a_handle(run):
    run["phases"][0].census_last["handle"] = 9


def stop_short(run):
    run["phases"][1].done -= 1


def time_out(run):
    run["phases"][0].timed_out = True


def crash(run):
    run["exit"] = 1


def complain(run):
    run["stderr"] = "task 'handle' (tid 7) died and nobody joins it"


@pytest.mark.parametrize(
    "damage, check",
    [
        (lambda run: grow(run, soak.RSS_SLACK_MIB + 0.1), "churn: RSS flat"),
        (leak_fd, "messages: fd count back"),
        (leave_a_handle, "churn: no task left"),
        (lose_a_handle, "messages: one handle task per open connection, after"),
        (stop_short, "churn: all work done"),
        (time_out, "messages: done within --timeout"),
        (crash, "server exits 0"),
        (complain, "server stderr empty"),
    ],
)
def test_each_criterion_catches_its_failure(damage, check):
    run = clean_run()
    damage(run)
    fails = failed(run)
    assert len(fails) == 1 and fails[0].startswith(check), fails


def test_rss_within_the_slack_is_flat():
    run = clean_run()
    grow(run, soak.RSS_SLACK_MIB - 0.1)
    assert failed(run) == []


def test_the_program_exits_1_when_a_check_fails(monkeypatch, capsys):
    # A real (tiny) run whose RSS bound is below any RSS: the flat check must fail.
    monkeypatch.setattr(soak, "RSS_SLACK_MIB", -1e6)
    monkeypatch.setattr(soak, "RSS_SLACK_PCT", -1e6)
    status = soak.main(["--connections", "5", "--messages", "200", "--churn", "40"])
    out = capsys.readouterr().out
    assert status == 1, out
    assert "[FAILED] messages: RSS flat" in out and "[FAILED] churn: RSS flat" in out
    assert out.rstrip().endswith("FAILED")


def test_a_phase_that_cannot_end_is_cut_short(monkeypatch, capsys):
    # As if the server never closed its side: every talker waits for it forever.
    def never_hung_up(sock, client):
        yield sleep(math.inf)

    monkeypatch.setattr(soak, "hang_up", never_hung_up)
    argv = ["--connections", "3", "--messages", "30", "--churn", "0", "--timeout", "1"]
    status = soak.main(argv)
    out = capsys.readouterr().out
    assert status == 1, out
    assert "[FAILED] messages: done within --timeout 1 s: " in out
    assert "[ok] messages: all work done: 30 of 30" in out
