"""The pytest plugin: run generator and ``async def`` tests as the main task of a fresh kernel.

Installed with the package (a ``pytest11`` entry point named ``yieldos``), and
opt-in, so it never takes over another project's tests::

    @pytest.mark.yieldos                      # or clock="virtual", policy="random:3",
    def test_echo(virtual_clock):             #    poller="selectors"
        yield sleep(3600)                     # the kernel jumps the clock: instant
        assert virtual_clock() == 3600

**Which tests it claims.** With ``yieldos_mode = strict`` (the default), only
tests carrying the ``yieldos`` marker, on the function, its class or its
module (``pytestmark``). With ``yieldos_mode = auto`` (ini option, or
``--yieldos-mode``), also every generator test, and every ``async def`` test
that no other async plugin owns: none with an ``asyncio``, ``anyio`` or
``trio`` marker or an ``anyio_backend`` fixture, and none at all while
pytest-asyncio runs in its own auto mode. A test it does not claim is left to
pytest exactly as if the plugin were absent (pytest rejects generator and
``async def`` tests on its own).

**How a test runs.** Fixtures are set up as usual, outside the kernel. The
test function is called with its fixtures to get its generator (or
coroutine), and that becomes ``main`` of a kernel: the one of the
``yieldos_kernel`` fixture if the test asked for it, else a kernel made for
this test alone. ``kernel.run`` returns when main does; the kernel is closed
after the test.

**Fixtures.** ``yieldos_kernel`` (the kernel the test will run in: inspect it,
add instruments), ``virtual_clock`` (a `VirtualClock`; when requested, the
kernel runs on it), ``random_policy`` (a random scheduling policy seeded with
``yieldos_seed``; when requested, the kernel schedules with it) and
``yieldos_seed`` (``--yieldos-seed N``; 0 unless told, ``random`` draws one
and the header prints it, so a failing order can be replayed).

**Failures show the task table.** When main raises, the plugin writes down,
at that very moment, which tasks were alive and what each waited on, and
shows it in a "yieldos tasks" section of the failure report. "That very
moment" matters: once main has exited the kernel cancels every other task,
which wakes them all and forgets what they waited on. That is why the table
is taken inside main's own frame (a thin generator around the test's body)
rather than by an instrument's ``exit`` hook, which runs after the
cancellations.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generator, Optional, Union, cast

import pytest

from .kernel import Kernel
from .scheduler import Policy
from .timers import VirtualClock

MARKER = "yieldos"
MODES = ("strict", "auto")
#: Markers and fixtures by which other plugins claim an ``async def`` test.
FOREIGN_MARKERS = ("asyncio", "anyio", "trio")
FOREIGN_FIXTURES = ("anyio_backend",)
#: What the marker accepts, and the values a string option may have.
MARKER_OPTIONS = ("clock", "policy", "poller")
CLOCKS = ("real", "virtual")
if TYPE_CHECKING:
    _Body = Union[types.GeneratorType[Any, Any, Any], types.CoroutineType[Any, Any, Any]]

#: How many tasks' stacks a failure report shows (the table lists them all).
STACKS_SHOWN = 20


@dataclass
class _Run:
    """What the plugin knows about one test's kernel, for its failure report."""

    seed: Optional[int] = None  # the random policy's seed, if it has one
    seed_from_option: bool = False  # ... which came from --yieldos-seed (replayable by it)
    table: Optional[str] = None  # the task table taken when main raised


_MODE = pytest.StashKey[str]()
_SEED = pytest.StashKey[int]()
_RUN = pytest.StashKey[_Run]()


# ── Configuration ────────────────────────────────────────────────────────


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("yieldos", "yieldos kernel tests")
    group.addoption(
        "--yieldos-mode",
        choices=MODES,
        default=None,
        help="which tests run under a yieldos kernel (overrides the yieldos_mode ini option)",
    )
    group.addoption(
        "--yieldos-seed",
        default="0",
        metavar="N",
        help="seed of the random scheduling policy (default 0; 'random' draws one)",
    )
    parser.addini(
        "yieldos_mode",
        "strict: only tests marked yieldos run in a kernel; auto: also every generator"
        " test and every async def test no other plugin claims",
        default="strict",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(clock='virtual', policy='random:SEED', poller='selectors'): run this"
        " generator or async def test as the main task of a fresh yieldos kernel",
    )
    mode = config.getoption("yieldos_mode") or config.getini("yieldos_mode")
    if mode not in MODES:
        raise pytest.UsageError(f"yieldos_mode must be strict or auto, not {mode!r}")
    config.stash[_MODE] = mode
    config.stash[_SEED] = _parse_seed(config.getoption("yieldos_seed"))


def _parse_seed(text: str) -> int:
    if text == "random":
        import random

        return random.SystemRandom().randrange(1 << 32)
    try:
        return int(text)
    except ValueError:
        raise pytest.UsageError(
            f"--yieldos-seed takes an integer or 'random', not {text!r}"
        ) from None


def pytest_report_header(config: pytest.Config) -> str:
    return f"yieldos: mode={config.stash[_MODE]}, seed={config.stash[_SEED]}"


# ── Which tests are ours ─────────────────────────────────────────────────


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(
    collector: Union[pytest.Module, pytest.Class], name: str, obj: object
) -> Optional[list[pytest.Function]]:
    """Collect the generator tests we claim: pytest itself refuses them (or, before
    pytest 8.4, collects them as xfail), so for those the plugin must collect first."""
    if not (inspect.isgeneratorfunction(obj) and collector.istestfunction(obj, name)):
        return None
    own = getattr(obj, "pytestmark", ())
    marked = any(getattr(m, "name", None) == MARKER for m in own)
    if not (marked or collector.get_closest_marker(MARKER) or _mode(collector) == "auto"):
        return None  # not ours: pytest does what it always does with a generator test
    # The private method is pytest's own collection of a function (parametrize included),
    # the one pytest-asyncio used for years too; there is no public spelling of it.
    return list(collector._genfunctions(name, obj))


def _mode(node: Union[pytest.Collector, pytest.Item]) -> str:
    return node.config.stash[_MODE]


def _claims(item: pytest.Function) -> bool:
    """Does this test run in a kernel? (Decided at call time: marks are final then.)"""
    func = item.obj
    kind_known = inspect.isgeneratorfunction(func) or inspect.iscoroutinefunction(func)
    if item.get_closest_marker(MARKER) is not None:
        foreign = _foreign(item)
        if foreign:
            pytest.fail(
                f"{item.name} is marked {MARKER} but also belongs to {foreign}: pick one"
                " (under pytest-asyncio's auto mode, write the test as a generator)",
                pytrace=False,
            )
        # A plain test in a marked class or module runs as usual; one marked itself is
        # called, to see whether it returns a generator (a decorated test may).
        return kind_known or any(m.name == MARKER for m in item.own_markers)
    if _mode(item) != "auto":
        return False
    if inspect.isgeneratorfunction(func):
        return True
    return inspect.iscoroutinefunction(func) and not _foreign(item) and not _asyncio_auto(item)


def _foreign(item: pytest.Function) -> Optional[str]:
    """The marker or fixture by which another plugin owns this test, if any."""
    for name in FOREIGN_MARKERS:
        if item.get_closest_marker(name) is not None:
            return f"the {name} marker"
    for name in FOREIGN_FIXTURES:
        if name in item.fixturenames:
            return f"the {name} fixture"
    return None


def _asyncio_auto(item: pytest.Function) -> bool:
    """Is pytest-asyncio loaded and in auto mode (where it owns every async def test)?"""
    config = item.config
    mode = config.getoption("asyncio_mode", None)
    if mode is None:
        try:
            mode = config.getini("asyncio_mode")
        except ValueError:  # no such ini option: pytest-asyncio is not loaded
            return False
    return str(mode) == "auto"


# ── Running a test ───────────────────────────────────────────────────────


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Optional[bool]:
    item = pyfuncitem
    if not _claims(item):
        return None
    funcargs = item.funcargs
    # The fixtures the function itself names (pytest's own pyfunc_call reads the same field).
    args = {name: funcargs[name] for name in item._fixtureinfo.argnames}
    k = funcargs.get("yieldos_kernel")
    own = not isinstance(k, Kernel)
    if own:
        k = _new_kernel(item, funcargs.get)
    assert isinstance(k, Kernel)
    try:
        body = item.obj(**args)
        if not isinstance(body, (types.GeneratorType, types.CoroutineType)):
            pytest.fail(
                f"{item.name} is marked {MARKER}, so it must be a generator function (with"
                f" yield) or an async def, but it returned {body!r}; its body has run as a"
                " plain function",
                pytrace=False,
            )
        try:
            k.run(_main(k, item, body))
        finally:
            body.close()  # no-op once finished; silences "never awaited" if it never ran
    finally:
        if own:
            k.close()
    return True


def _main(k: Kernel, item: pytest.Function, body: _Body) -> Generator[Any, Any, Any]:
    """The test's body as main, with a frame of our own around it to see it fail."""

    def main() -> Generator[Any, Any, Any]:
        try:
            if isinstance(body, types.CoroutineType):
                return (yield from body.__await__())
            return (yield from body)
        except GeneratorExit:
            raise  # closed by an aborting kernel: not a failure of the test's own
        except BaseException as error:
            _record_failure(k, item, error)
            raise

    gen = main()
    # main's task name is the test's (the kernel names a task after its generator).
    cast("types.GeneratorType[Any, Any, Any]", gen).__qualname__ = body.__qualname__
    return gen


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    run = item.stash.get(_RUN, None)
    if call.when == "call" and report.failed and run is not None and run.table is not None:
        report.sections.append(("yieldos tasks", run.table))
    return report


# ── Fixtures ─────────────────────────────────────────────────────────────


@pytest.fixture
def yieldos_kernel(request: pytest.FixtureRequest) -> Generator[Kernel, None, None]:
    """The fresh kernel this test runs in (made from the marker's options, the
    ``virtual_clock`` and the ``random_policy`` if requested); closed after the test."""

    def fixture(name: str) -> Any:
        return request.getfixturevalue(name) if name in request.fixturenames else None

    with _new_kernel(request.node, fixture) as k:
        yield k


@pytest.fixture
def virtual_clock() -> VirtualClock:
    """A `VirtualClock` at 0; a test that asks for it runs on it."""
    return VirtualClock()


@pytest.fixture
def yieldos_seed(request: pytest.FixtureRequest) -> int:
    """The session's scheduling seed: ``--yieldos-seed N`` (0 unless told)."""
    return request.config.stash[_SEED]


@pytest.fixture
def random_policy(yieldos_seed: int) -> Policy:
    """A random scheduling policy seeded with ``yieldos_seed``; a test that asks for it
    is scheduled by it."""
    return _make_policy(f"random:{yieldos_seed}")


# ── Making the kernel ────────────────────────────────────────────────────


def _new_kernel(node: pytest.Item, fixture: Callable[[str], Any]) -> Kernel:
    """A kernel for ``node`` from its marker options and the fixtures it requested
    (``fixture(name)`` is the fixture's value, or None if not requested)."""
    options = _marker_options(node)
    clock = fixture("virtual_clock")
    wanted = options.get("clock")
    if wanted is not None and wanted not in CLOCKS:
        pytest.fail(f"{MARKER} marker: clock must be 'real' or 'virtual', not {wanted!r}")
    if clock is not None and wanted == "real":
        pytest.fail(f"{MARKER} marker: clock='real', but the test asks for virtual_clock")
    if clock is None and wanted == "virtual":
        clock = VirtualClock()
    policy = fixture("random_policy")
    spec = options.get("policy")
    seed: Optional[int] = None
    from_option = False  # the seed is --yieldos-seed's, so that option replays it
    if policy is not None:
        if spec is not None:
            pytest.fail(f"{MARKER} marker: policy={spec!r}, but the test asks for random_policy")
        seed, from_option = fixture("yieldos_seed"), True
    elif spec is not None:
        if spec == "random":  # seeded from the command line, as the fixture is
            seed, from_option = node.config.stash[_SEED], True
            spec = f"random:{seed}"
        elif spec.startswith("random:") and spec[7:].lstrip("-").isdigit():
            seed = int(spec[7:])
        policy = _make_policy(spec)
    k = Kernel(poller=options.get("poller", "auto"), clock=clock, policy=policy)
    node.stash[_RUN] = _Run(seed, from_option)
    return k


def _marker_options(node: pytest.Item) -> dict[str, str]:
    """The ``yieldos`` markers' keywords, the closest (function, then class, module) winning."""
    options: dict[str, str] = {}
    for mark in reversed(list(node.iter_markers(MARKER))):
        if mark.args:
            pytest.fail(f"{MARKER} marker takes keywords only, not {mark.args!r}")
        unknown = sorted(set(mark.kwargs) - set(MARKER_OPTIONS))
        if unknown:
            pytest.fail(f"{MARKER} marker: unknown option(s) {unknown}; it has {MARKER_OPTIONS}")
        options.update(mark.kwargs)
    return options


def _make_policy(spec: str) -> Policy:
    """The policy named by ``spec`` (``"random:SEED"``, ...); a bad name fails the test."""
    # Imported here: this module is loaded into every pytest session where yieldos is
    # installed, and only tests that ask for a policy need the policies.
    from .scheduler import make_policy

    try:
        return make_policy(spec)
    except ValueError as error:
        pytest.fail(f"{MARKER} marker: {error}", pytrace=False)


# ── The task table of a failure ──────────────────────────────────────────


def _record_failure(k: Kernel, item: pytest.Function, error: BaseException) -> None:
    """Main is raising ``error``: write down the task table now, before the kernel
    cancels the others (this runs in main's frame, so every other task is as it was)."""
    run = item.stash.get(_RUN, None)
    if run is None or run.table is not None:
        return
    try:
        lines = _failure_report(k, run, error)
    except Exception as report_error:  # a broken report must not hide the test's failure
        lines = [f"(no task table: {report_error!r})"]
    run.table = "\n".join(lines)


def _failure_report(k: Kernel, run: _Run, error: BaseException) -> list[str]:
    from .procfs import format_ps  # only now: a test that passes never pays for it

    lines = [f"main raised {type(error).__name__}; the tasks alive at that moment:"]
    lines.append(format_ps(k.ps()))
    if getattr(k.clock, "virtual", False):
        lines.append(f"virtual clock: {k.clock():.6f} s")
    if run.seed is not None:
        replay = f" (replay with --yieldos-seed {run.seed})" if run.seed_from_option else ""
        lines.append(f"random scheduling policy, seed {run.seed}{replay}")
    # Where each other task is suspended (main's traceback is the failure shown above).
    others = [tid for tid, task in sorted(k.tasks.items()) if task is not k.main]
    for tid in others[:STACKS_SHOWN]:
        lines += ["", k.where(tid)]
    if len(others) > STACKS_SHOWN:
        lines += ["", f"(and {len(others) - STACKS_SHOWN} more tasks)"]
    return lines
