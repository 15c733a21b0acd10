"""The pytest plugin (kernel/pytest_plugin.py), seen from a user's test suite.

Each test writes a small test module, runs pytest on it in this very process
(``pytester.runpytest_inprocess``, fast and leak-checked by our conftest like
any other test), and checks the outcomes and what the report says.

The inner runs load exactly the plugins they name: autoloading is off
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD``), and each passes ``-p kernel.pytest_plugin``.
That keeps them apart from whatever else is installed here (and fast), and
works in a bare checkout, where the package is not installed and there is no
entry point. One test checks that, where yieldos *is* installed (the tox
envs), its ``pytest11`` entry point loads the plugin by itself.
"""

from __future__ import annotations

import importlib.metadata
import os
import re

import pytest

pytest_plugins = ["pytester"]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _entry_point_live() -> bool:
    """Is yieldos installed here with its pytest11 entry point?"""
    eps = importlib.metadata.entry_points()
    if hasattr(eps, "select"):  # Python 3.10+
        group = eps.select(group="pytest11")
    else:  # 3.9: a dict of groups
        group = eps.get("pytest11", [])  # type: ignore[attr-defined]
    return any(ep.value == "kernel.pytest_plugin" for ep in group)


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """``run(source, *args)``: write ``source`` as test_it.py and run pytest on it."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")

    def run(source: str, *args: str, plugin: bool = True) -> pytest.RunResult:
        pytester.makepyfile(test_it=source)
        plugins = ["-p", "kernel.pytest_plugin"] if plugin else []
        return pytester.runpytest_inprocess(*plugins, "-p", "no:cacheprovider", *args)

    return run


# ── Marked tests run in a kernel ─────────────────────────────────────────


def test_marked_generator_test_passes_and_fails_on_its_own_assertions(run):
    result = run(
        """
        import pytest
        from syscalls import gettid, sleep

        @pytest.mark.yieldos
        def test_good():
            yield sleep(0)
            assert (yield gettid()) == 1  # the test's body is main, the first task

        @pytest.mark.yieldos
        def test_bad():
            yield sleep(0)
            x = 1
            assert x == 2
        """
    )
    result.assert_outcomes(passed=1, failed=1)
    # The traceback is cut at the test's own code: no kernel frames before it.
    result.stdout.fnmatch_lines(["*def test_bad():*", ">*assert x == 2", "E*assert 1 == 2"])
    result.stdout.no_fnmatch_line("*kernel/kernel.py*")


def test_async_def_test_with_fixtures_as_arguments(run):
    result = run(
        """
        import pytest
        from syscalls import current_task, sleep

        @pytest.fixture
        def greeting():
            return "hello"

        @pytest.mark.yieldos
        async def test_async(greeting, tmp_path):
            await sleep(0)
            assert greeting == "hello" and tmp_path.is_dir()
            assert current_task().name == "test_async"

        @pytest.mark.yieldos
        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_parametrized(n, greeting):
            yield sleep(0)
            assert n in (1, 2, 3) and greeting == "hello"
        """
    )
    result.assert_outcomes(passed=4)


def test_module_and_class_marks_apply_to_generator_and_async_tests_only(run):
    result = run(
        """
        import pytest
        from syscalls import sleep

        pytestmark = pytest.mark.yieldos(clock="virtual")

        def test_plain_test_runs_as_usual():
            assert True

        def test_module_options(yieldos_kernel):
            yield sleep(10)
            assert yieldos_kernel.clock() == 10  # virtual: instant

        @pytest.mark.yieldos(clock="real")  # the closest mark wins
        def test_function_overrides(yieldos_kernel):
            yield sleep(0)
            assert not getattr(yieldos_kernel.clock, "virtual", False)

        @pytest.mark.yieldos(policy="random:3")
        class TestGroup:
            async def test_both(self, yieldos_kernel):
                await sleep(1)
                assert yieldos_kernel.clock() == 1 and yieldos_kernel.runq.seed == 3

            def test_generator_method(self, yieldos_kernel):
                yield sleep(2)
                assert yieldos_kernel.clock() == 2 and yieldos_kernel.runq.seed == 3
        """
    )
    result.assert_outcomes(passed=5)


def test_the_kernel_is_closed_after_the_test(run):
    result = run(
        """
        import pytest
        from syscalls import sleep

        seen = []

        @pytest.mark.yieldos
        def test_uses(yieldos_kernel):
            seen.append(yieldos_kernel)
            yield sleep(0)

        def test_closed_afterwards():
            with pytest.raises(RuntimeError, match="closed"):
                seen[0].run(sleep(0))
        """
    )
    result.assert_outcomes(passed=2)


# ── Fixtures ─────────────────────────────────────────────────────────────


def test_virtual_clock_makes_an_hour_instant(run):
    result = run(
        """
        import time
        import pytest
        from syscalls import clock, sleep

        @pytest.mark.yieldos
        def test_hour(virtual_clock, yieldos_kernel):
            assert yieldos_kernel.clock is virtual_clock
            start = time.monotonic()
            yield sleep(3600)
            assert virtual_clock() == 3600 and clock() == 3600
            assert time.monotonic() - start < 60  # an hour, in (much) less than a minute

        @pytest.mark.yieldos
        async def test_without_the_kernel_fixture(virtual_clock):
            await sleep(3600)
            assert virtual_clock() == 3600
        """
    )
    result.assert_outcomes(passed=2)


def test_yieldos_kernel_is_the_kernel_the_test_runs_in(run):
    result = run(
        """
        import pytest
        import kernel
        from syscalls import spawn, join, sleep

        class Spawns(kernel.Instrument):
            def __init__(self):
                self.names = []

            def spawn(self, task):
                self.names.append(task.name)

        @pytest.fixture
        def spawns(yieldos_kernel):
            spawns = Spawns()
            yieldos_kernel.add_instrument(spawns)  # before the test's body is a task
            return spawns

        def child():
            yield sleep(0)

        @pytest.mark.yieldos
        def test_instrumented(spawns):
            yield join((yield spawn(child)))
            assert spawns.names == ["test_instrumented", "child"]
        """
    )
    result.assert_outcomes(passed=1)


RANDOM_ORDER = """
    import pytest
    from syscalls import spawn, join, sleep

    @pytest.mark.yieldos
    def test_order(random_policy, yieldos_kernel, yieldos_seed):
        assert yieldos_kernel.runq is random_policy and random_policy.seed == yieldos_seed
        order = []

        def worker(i):
            yield sleep(0)
            order.append(i)

        tasks = []
        for i in range(8):
            tasks.append((yield spawn(worker, i)))
        for t in tasks:
            yield join(t)
        print("ORDER", order)
"""


def _order(result: pytest.RunResult) -> list[int]:
    result.assert_outcomes(passed=1)
    match = re.search(r"ORDER \[([\d, ]*)\]", result.stdout.str())  # -s: after the file name
    assert match is not None
    return [int(n) for n in match.group(1).split(",")]


def test_random_policy_is_seeded_by_the_option(run):
    orders = {seed: _order(run(RANDOM_ORDER, "-s", f"--yieldos-seed={seed}")) for seed in range(5)}
    assert all(sorted(order) == list(range(8)) for order in orders.values())
    assert _order(run(RANDOM_ORDER, "-s", "--yieldos-seed=3")) == orders[3]  # replayable
    assert len({tuple(order) for order in orders.values()}) > 1  # and the seed matters
    assert _order(run(RANDOM_ORDER, "-s")) == orders[0]  # the default seed is 0


def test_seed_random_draws_one_and_prints_it(run):
    result = run("def test_nothing(): pass", "--yieldos-seed=random")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["yieldos: mode=strict, seed=*"])
    assert re.search(r"seed=\d+", result.stdout.str())


def test_marker_policy_random_takes_the_session_seed(run):
    result = run(
        """
        import pytest
        from syscalls import sleep

        @pytest.mark.yieldos(policy="random")
        def test_seeded(yieldos_kernel):
            yield sleep(0)
            assert yieldos_kernel.runq.seed == 42
        """,
        "--yieldos-seed=42",
    )
    result.assert_outcomes(passed=1)


# ── Failures show the task table ─────────────────────────────────────────


def test_failure_report_shows_the_task_table_at_the_moment_main_failed(run):
    result = run(
        """
        import pytest
        from syscalls import spawn, sleep, wait_on

        def stuck_reader():
            yield wait_on("reply channel")

        @pytest.mark.yieldos(policy="random")
        def test_fails(yieldos_kernel):
            yield spawn(stuck_reader)
            yield sleep(0)
            assert False, "no reply"
        """,
        "--yieldos-seed=7",
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "yieldos tasks" in out and "main raised AssertionError" in out
    # The reader is shown blocked, on its channel: as it was before the kernel cancelled it.
    assert _row(result, "stuck_reader") == ("2", "1", "blocked", "WaitOn 'reply channel'")
    # ... how to replay the scheduling order, and the line where the reader waits.
    result.stdout.fnmatch_lines(
        [
            "*seed 7 (replay with --yieldos-seed 7)",
            '*yield wait_on("reply channel")*suspended here*',
        ]
    )


def _row(result: pytest.RunResult, name: str) -> tuple[str, ...]:
    """TID, PPID, STATE and WAIT of task ``name`` in the report's task table."""
    for line in result.outlines:
        cells = line.split()
        if len(cells) >= 6 and cells[0].isdigit() and cells[4] == name:
            return (cells[0], cells[1], cells[2], " ".join(cells[5:]))
    raise AssertionError(f"no row for {name!r} in the task table")


def test_deadlock_failure_shows_who_waits_on_what(run):
    result = run(
        """
        import pytest
        from syscalls import join, spawn, wait_on

        def consumer():
            yield wait_on("items")  # nobody will ever put one

        @pytest.mark.yieldos(clock="virtual")
        async def test_deadlocks():
            task = await spawn(consumer)
            await join(task)
        """
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Deadlock*", "*yieldos tasks*", "main raised Deadlock*"])
    assert _row(result, "consumer") == ("2", "1", "blocked", "WaitOn 'items'")
    assert _row(result, "test_deadlocks") == ("1", "-", "running", "-")  # caught raising
    result.stdout.fnmatch_lines(["virtual clock: 0.000000 s"])


def test_passing_and_skipped_tests_have_no_table(run):
    result = run(
        """
        import pytest
        from syscalls import sleep

        @pytest.mark.yieldos
        def test_skips():
            yield sleep(0)
            pytest.skip("not today")

        @pytest.mark.yieldos
        def test_passes():
            yield sleep(0)
        """,
        "-rA",
    )
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.no_fnmatch_line("*yieldos tasks*")


# ── Mistakes get clear errors ────────────────────────────────────────────


def test_marked_plain_function_is_an_error(run):
    result = run(
        """
        import pytest

        @pytest.mark.yieldos
        def test_plain():
            pass
        """
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*test_plain is marked yieldos, so it must be a generator*"])


def test_bad_marker_options_are_errors(run):
    result = run(
        """
        import pytest
        from syscalls import sleep

        @pytest.mark.yieldos(clock="sundial")
        def test_clock():
            yield sleep(0)

        @pytest.mark.yieldos(policy="bogus")
        def test_policy():
            yield sleep(0)

        @pytest.mark.yieldos(colour="blue")
        def test_unknown():
            yield sleep(0)

        @pytest.mark.yieldos("virtual")
        def test_positional():
            yield sleep(0)

        @pytest.mark.yieldos(clock="real")
        def test_conflict(virtual_clock):
            yield sleep(0)
        """
    )
    result.assert_outcomes(failed=5)
    result.stdout.fnmatch_lines_random(
        [
            "*clock must be 'real' or 'virtual', not 'sundial'*",
            "*unknown scheduling policy 'bogus'*",
            "*unknown option(s)*colour*",
            "*keywords only*",
            "*clock='real', but the test asks for virtual_clock*",
        ]
    )


def test_bad_command_line_and_ini_values_are_usage_errors(run, pytester):
    result = run("def test_nothing(): pass", "--yieldos-seed=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--yieldos-seed takes an integer or 'random', not 'lots'*"])
    pytester.makeini("[pytest]\nyieldos_mode = sometimes\n")
    result = run("def test_nothing(): pass")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*yieldos_mode must be strict or auto, not 'sometimes'*"])


# ── Opt-in: strict mode leaves everything else alone ─────────────────────

UNMARKED_GENERATOR = """
    from syscalls import sleep

    def test_generator():
        yield sleep(0)
"""
UNMARKED_ASYNC = """
    import pytest
    from syscalls import sleep

    async def test_async():
        await sleep(0)

    def test_plain():
        assert True
"""
UNMARKED = UNMARKED_GENERATOR + UNMARKED_ASYNC


@pytest.mark.parametrize("source", [UNMARKED_GENERATOR, UNMARKED_ASYNC])
def test_strict_mode_leaves_unmarked_tests_to_pytest(run, source):
    with_plugin = run(source)
    without = run(source, plugin=False)
    assert with_plugin.parseoutcomes() == without.parseoutcomes()
    assert with_plugin.ret == without.ret != pytest.ExitCode.OK  # pytest refuses them itself
    if source is UNMARKED_ASYNC:
        with_plugin.stdout.fnmatch_lines(["*async def functions are not natively supported*"])


def test_auto_mode_claims_generator_and_async_tests(run, pytester):
    pytester.makeini("[pytest]\nyieldos_mode = auto\nmarkers =\n    asyncio: another plugin's\n")
    result = run(
        UNMARKED
        + """
    @pytest.mark.asyncio
    async def test_someone_elses():
        pass
    """
    )
    # Ours: the generator and async tests; the asyncio-marked one is left to pytest (no
    # asyncio plugin here, so pytest fails it as it would without us).
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["*test_someone_elses*", "*not natively supported*"])
    result.stdout.fnmatch_lines(["yieldos: mode=auto, seed=0"])


def test_auto_mode_from_the_command_line(run):
    run(UNMARKED, "--yieldos-mode=auto").assert_outcomes(passed=3)


def test_auto_mode_leaves_async_tests_to_the_plugins_that_own_them(run, pytester):
    # Stand-ins for pytest-asyncio's ini option and anyio's fixture: what the plugin looks at.
    pytester.makeconftest(
        """
        import pytest

        def pytest_addoption(parser):
            parser.addini("asyncio_mode", "pytest-asyncio's", default="strict")

        @pytest.fixture
        def anyio_backend():
            return "trio"
        """
    )
    anyio_test = """
    async def test_anyio(anyio_backend):
        pass
"""
    result = run(UNMARKED + anyio_test, "--yieldos-mode=auto")
    result.assert_outcomes(passed=3, failed=1)  # all ours but the anyio one
    result.stdout.fnmatch_lines(["*test_anyio*", "*not natively supported*"])
    # pytest-asyncio's auto mode: every async def test is its own, none ours.
    result = run(UNMARKED + anyio_test, "--yieldos-mode=auto", "-o", "asyncio_mode=auto")
    result.assert_outcomes(passed=2, failed=2)


def test_marked_and_owned_by_another_plugin_is_an_error(run, pytester):
    pytester.makeini("[pytest]\nmarkers =\n    trio: another plugin's\n")
    result = run(
        """
        import pytest

        @pytest.mark.yieldos
        @pytest.mark.trio
        async def test_both():
            pass
        """
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*marked yieldos but also belongs to the trio marker*"])


def test_coexists_with_pytest_asyncio(run, pytester):
    pytest.importorskip("pytest_asyncio")
    pytester.makeini(
        "[pytest]\nyieldos_mode = auto\nasyncio_mode = strict\n"
        "asyncio_default_fixture_loop_scope = function\n"
    )
    asyncio_plugin = ("-p", "pytest_asyncio.plugin")
    result = run(
        """
        import asyncio
        import pytest
        from syscalls import sleep

        @pytest.mark.asyncio
        async def test_asyncio():
            await asyncio.sleep(0)  # only works under asyncio's loop
            asyncio.get_running_loop()

        async def test_ours():
            await sleep(0)  # only works under a yieldos kernel
        """,
        *asyncio_plugin,
    )
    result.assert_outcomes(passed=2)
    # In its own auto mode pytest-asyncio owns every async test; ours stays out of the way.
    result = run(
        """
        import asyncio

        async def test_asyncio():
            await asyncio.sleep(0)
            asyncio.get_running_loop()
        """,
        *asyncio_plugin,
        "-o",
        "asyncio_mode=auto",
    )
    result.assert_outcomes(passed=1)


# ── Installed with the package ───────────────────────────────────────────


def test_pyproject_declares_the_entry_point():
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        text = f.read()
    section = text.split("[project.entry-points.pytest11]", 1)[1].split("\n[", 1)[0]
    assert 'yieldos = "kernel.pytest_plugin"' in section


@pytest.mark.skipif(not _entry_point_live(), reason="yieldos is not installed: no entry point")
def test_the_installed_entry_point_loads_the_plugin(pytester, monkeypatch):
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    pytester.makepyfile("def test_nothing(): pass")
    # No "-p kernel.pytest_plugin": found by itself. (Other installed plugins are noise here.)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.stdout.fnmatch_lines(["yieldos: mode=strict, seed=0"])
