"""``python -m kernel`` (kernel/cli.py, kernel/demo.py): run, strace, trace, demo.

Most tests call `kernel.cli.main` in this process (the script runs here, through
`Kernel.setups`); a few start ``python -m kernel`` for real.
"""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import kernel
import kernel.scheduler
from kernel.cli import main
from kernel.demo import run_demo

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SVG = "{http://www.w3.org/2000/svg}"

SLEEPY = """\
import sys
import kernel
from syscalls import clock, join, sleep, spawn

def worker(seconds):
    yield sleep(seconds)
    return seconds

def main():
    t = yield spawn(worker, float(sys.argv[1]))
    yield join(t)
    print("clock", clock())

for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 1):
    kernel.run(main)
"""


def script(tmp_path, text: str, name: str = "script.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def python_m_kernel(*args: str, cwd: str = REPO) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, "-m", "kernel", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


@pytest.fixture(autouse=True)
def setups_are_left_as_found():
    before = list(kernel.Kernel.setups)
    argv, path = sys.argv[:], sys.path[:]
    yield
    assert kernel.Kernel.setups == before
    assert sys.argv == argv and sys.path == path


# ── Help ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "command, expected",
    [
        ([], ["run     Run a script", "strace  Run a script and print every trap", "examples:"]),
        (["run"], ["--clock {virtual,real}", "--policy SPEC", "--top", "130 on Ctrl-C"]),
        (["strace"], ["-c ", "-e TRAP,...", "-o FILE", "--clock", "strace.py documents"]),
        (["trace"], ["-o FILE.json", "--svg FILE.svg", "--traps", "ui.perfetto.dev"]),
        (["demo"], ["--out DIR", "ping-pong"]),
    ],
)
def test_help(capsys, monkeypatch, command, expected):
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps to the terminal's width
    with pytest.raises(SystemExit) as exit:
        main([*command, "--help"])
    assert exit.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # whatever the wrapping
    for text in expected:
        assert " ".join(text.split()) in out


def test_main_module_exits_with_the_status(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["kernel", "run", script(tmp_path, "raise SystemExit(5)")])
    with pytest.raises(SystemExit) as exit:
        # By path: with the package's pytest11 entry point live, pytest's assertion
        # rewriter imports kernel's modules, and runpy.run_module cannot use its loader.
        runpy.run_path(str(Path(kernel.__file__).with_name("__main__.py")), run_name="__main__")
    assert exit.value.code == 5


def test_help_and_usage_errors_from_python_m_kernel():
    proc = python_m_kernel("--help")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: python -m kernel ")
    proc = python_m_kernel()
    assert proc.returncode == 2
    assert "the following arguments are required" in proc.stderr


# ── run ──────────────────────────────────────────────────────────────────


def test_run_passes_argv_and_runs_as_main(tmp_path, capsys):
    path = script(
        tmp_path,
        """
        import sys
        print(__name__, sys.argv, sys.path[0])
        """,
    )
    assert main(["run", path, "a", "--b", "-c"]) == 0
    assert capsys.readouterr().out == f"__main__ {[path, 'a', '--b', '-c']} {tmp_path}\n"


@pytest.mark.parametrize(
    "body, status, err",
    [
        ("import sys; sys.exit(3)", 3, ""),
        ("import sys; sys.exit()", 0, ""),
        ("import sys; sys.exit('bye')", 1, "bye\n"),
        ("raise KeyboardInterrupt", 130, "KeyboardInterrupt\n"),
        ("pass", 0, ""),
    ],
)
def test_run_exit_status(tmp_path, capsys, body, status, err):
    path = script(tmp_path, body)
    assert main(["run", path]) == status
    assert capsys.readouterr().err.endswith(err)


def test_run_a_failing_script_prints_its_traceback(tmp_path, capsys):
    path = script(
        tmp_path,
        """\
        def fail():
            raise ValueError("boom")
        fail()
        """,
    )
    assert main(["run", path]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n")
    assert f'  File "{path}", line 3, in <module>\n' in err
    assert err.endswith("ValueError: boom\n")
    assert "runpy" not in err and "cli.py" not in err  # the script's frames, not ours


@pytest.mark.parametrize("command", ["run", "strace", "trace"])
def test_a_missing_script(tmp_path, capsys, command):
    assert main([command, str(tmp_path / "nope.py")]) == 2
    assert capsys.readouterr().err == (
        f"python -m kernel: can't open file {str(tmp_path / 'nope.py')!r}:"
        " [Errno 2] No such file or directory\n"
    )


def test_virtual_clock_is_fresh_for_every_kernel(tmp_path, capsys):
    path = script(tmp_path, SLEEPY)
    assert main(["run", "--clock", "virtual", path, "3600", "2"]) == 0
    assert capsys.readouterr().out == "clock 3600.0\nclock 3600.0\n"


def test_real_clock_replaces_the_scripts_clock(tmp_path, capsys):
    path = script(
        tmp_path,
        """
        import time
        import kernel
        with kernel.Kernel(clock=kernel.VirtualClock()) as k:
            print(k.clock is time.monotonic)
        """,
    )
    assert main(["run", "--clock", "real", path]) == 0
    assert capsys.readouterr().out == "True\n"
    assert main(["run", path]) == 0  # no --clock: the script's choice stands
    assert capsys.readouterr().out == "False\n"


POLICY_PROBE = """
import kernel
from kernel.scheduler import make_policy
with kernel.Kernel(policy=make_policy("fair")) as k:
    print(type(k.runq).__name__, k.runq in k.instruments, len(k.instruments))
"""


def test_policy(tmp_path, capsys):
    path = script(tmp_path, POLICY_PROBE)
    assert main(["run", path]) == 0
    fair = capsys.readouterr().out
    assert fair.endswith(" True 1\n")
    assert main(["run", "--policy", "fifo", path]) == 0
    assert capsys.readouterr().out == "RunQueue False 0\n"  # the script's policy uninstalled
    assert main(["run", "--policy", "fair", path]) == 0
    assert capsys.readouterr().out == fair  # a fresh one, installed as an instrument
    assert main(["run", "--policy", "lottery:7", path]) == 0
    assert capsys.readouterr().out.split()[1:] == ["False", "0"]


def test_bad_policy(tmp_path, capsys):
    path = script(tmp_path, "print('ran')")
    with pytest.raises(SystemExit) as exit:
        main(["run", "--policy", "bogus", path])
    assert exit.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("python -m kernel run: error: --policy: unknown scheduling policy")


def test_top(tmp_path, capsys):
    assert main(["run", "--top", "--clock", "virtual", script(tmp_path, SLEEPY), "1"]) == 0
    out, err = capsys.readouterr()
    assert out == "clock 1.0\n"
    header = err.splitlines()[0].split()
    assert header[:3] == ["TID", "NAME", "STATE"]
    assert [line.split()[1] for line in err.splitlines()[1:3]] == ["main", "worker"]


# ── strace ───────────────────────────────────────────────────────────────

SLEEPY_STRACE = """\
[tid 1 main] spawn(worker, 0.5) = <tid 2 worker> <0.000000>
[tid 1 main] join(<tid 2 worker>) <unfinished ...>
[tid 2 worker] sleep(0.5) = None <0.500000>
[tid 2 worker] +++ exited with 0.5 +++
[tid 1 main] <... join resumed> = 0.5 <0.500000>
[tid 1 main] +++ exited with None +++
"""


def test_strace(tmp_path, capsys):
    path = script(tmp_path, SLEEPY)
    assert main(["strace", "--clock", "virtual", path, "0.5"]) == 0
    out, err = capsys.readouterr()
    assert out == "clock 0.5\n"
    assert err == SLEEPY_STRACE


def test_strace_to_a_file_filtered(tmp_path, capsys):
    path = script(tmp_path, SLEEPY)
    output = tmp_path / "calls.txt"
    assert (
        main(["strace", "-o", str(output), "-e", "trace=sleep", "--clock", "virtual", path, "0.5"])
        == 0
    )
    assert capsys.readouterr().err == ""
    assert output.read_text() == (
        "[tid 2 worker] sleep(0.5) = None <0.500000>\n"
        "[tid 2 worker] +++ exited with 0.5 +++\n"
        "[tid 1 main] +++ exited with None +++\n"
    )


def test_strace_summary(tmp_path, capsys):
    path = script(tmp_path, SLEEPY)
    assert main(["strace", "-c", "--clock", "virtual", path, "0.25", "2"]) == 0
    err = capsys.readouterr().err
    table = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 50.00    0.250000      250000         1           join
 50.00    0.250000      250000         1           sleep
  0.00    0.000000           0         1           spawn
------ ----------- ----------- --------- --------- ----------------
100.00    0.500000      166667         3           total
"""
    assert err == table * 2  # one table per kernel run


def test_strace_usage_errors(tmp_path, capsys):
    path = script(tmp_path, "print('ran')")
    for args, message in [
        (["-e", "recv,recieve"], "error: -e: unknown trap name(s): recieve"),
        (["-o", str(tmp_path / "no" / "such" / "dir")], "error: -o: [Errno 2]"),
    ]:
        with pytest.raises(SystemExit) as exit:
            main(["strace", *args, path])
        assert exit.value.code == 2
        out, err = capsys.readouterr()
        assert out == "" and message in err


# ── trace ────────────────────────────────────────────────────────────────


def test_trace_writes_json_and_svg(tmp_path, capsys):
    path = script(tmp_path, SLEEPY)
    json_path, svg_path = tmp_path / "run.json", tmp_path / "run.svg"
    status = main(
        ["trace", "--clock", "virtual", "-o", str(json_path), "--svg", str(svg_path), path, "1"]
    )
    assert status == 0
    err = capsys.readouterr().err
    assert err == f"trace: wrote {json_path} (14 events)\ntrace: wrote {svg_path}\n"
    events = json.loads(json_path.read_text())["traceEvents"]
    assert {e["tid"] for e in events if e["ph"] == "X"} == {1, 2}
    sleeping = [e for e in events if e["name"] == "sleeping"]
    assert [(e["tid"], e["ts"], e["dur"]) for e in sleeping] == [(2, 0.0, 1e6)]
    root = ET.parse(svg_path).getroot()
    rows = [g.get("id") for g in root.iter(SVG + "g") if g.get("class") == "task"]
    assert rows == ["task-1", "task-2"]
    assert root.find(SVG + "title").text == "yieldos timeline: script.py"


def test_trace_of_several_kernels_and_traps(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = script(tmp_path, SLEEPY)
    assert main(["trace", "--traps", "--clock", "virtual", "--svg", "t.svg", path, "1", "2"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[1:] == ["trace: wrote t.svg", "trace: wrote t-2.svg"]
    doc = json.loads((tmp_path / "yieldos-trace.json").read_text())  # the default -o
    assert {e["pid"] for e in doc["traceEvents"]} == {1, 2}
    assert "sleep" in {e["name"] for e in doc["traceEvents"] if e.get("cat") == "trap"}
    for name in ("t.svg", "t-2.svg"):
        title = ET.parse(tmp_path / name).getroot().find(SVG + "title").text
        assert title.startswith("yieldos timeline: script.py #")


def test_trace_of_a_failing_script_still_writes(tmp_path, capsys):
    path = script(
        tmp_path,
        """
        import kernel
        from syscalls import sleep
        def main():
            yield sleep(1)
            raise ValueError("late")
        kernel.run(main)
        """,
    )
    out = tmp_path / "fail.json"
    assert main(["trace", "--clock", "virtual", "-o", str(out), path]) == 1
    assert "ValueError: late" in capsys.readouterr().err
    events = json.loads(out.read_text())["traceEvents"]
    assert [e["args"] for e in events if e["name"] == "exit"] == [{"exception": "ValueError: late"}]


def test_trace_of_a_script_without_kernels(tmp_path, capsys):
    out = tmp_path / "none.json"
    assert main(["trace", "-o", str(out), script(tmp_path, "pass")]) == 0
    assert "created no kernel" in capsys.readouterr().err
    assert not out.exists()


def test_trace_from_python_m_kernel(tmp_path):
    path = script(tmp_path, SLEEPY)
    proc = python_m_kernel(
        "trace",
        "--clock",
        "virtual",
        "-o",
        "x.json",
        "--svg",
        "x.svg",
        path,
        "2",
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "clock 2.0\n"
    assert json.loads((tmp_path / "x.json").read_text())["otherData"]["clock"] == "virtual"
    ET.parse(tmp_path / "x.svg")


# ── demo ─────────────────────────────────────────────────────────────────


def test_demo(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    trace, svg = tmp_path / "out" / "demo-trace.json", tmp_path / "out" / "demo-timeline.svg"
    assert f"trace:    {trace}" in out and f"timeline: {svg}" in out
    lines = out.splitlines()
    assert (
        lines[1]
        == "[tid 1 main] spawn(crunch, <VirtualClock now=0.000000>, 3) = <tid 2 crunch> <0.000000>"
    )
    assert "[tid 2 crunch] +++ exited with 3 +++" in lines
    assert "[tid 5 pong] +++ exited with 2 +++" in lines
    assert any(line.endswith(" total") and line.split()[3] == "29" for line in lines)
    names = {
        e["args"]["name"]
        for e in json.loads(trace.read_text())["traceEvents"]
        if e["name"] == "thread_name"
    }
    assert names == {"main (1)", "crunch (2)", "nap (3)", "nap (4)", "pong (5)", "ping (6)"}
    rows = [g for g in ET.parse(svg).getroot().iter(SVG + "g") if g.get("class") == "task"]
    assert len(rows) == 6


def test_demo_is_the_same_every_run_and_defaults_to_a_temporary_directory(capsys):
    import io

    first, second = io.StringIO(), io.StringIO()
    paths = run_demo(None, first)
    try:
        assert all(os.path.exists(p) for p in paths)
        run_demo(os.path.dirname(paths[0]), second)
        assert first.getvalue() == second.getvalue()
    finally:
        shutil.rmtree(os.path.dirname(paths[0]))


def test_demo_from_python_m_kernel(tmp_path):
    proc = python_m_kernel("demo", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "[tid 6 ping] +++ exited with None +++" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["demo-timeline.svg", "demo-trace.json"]
