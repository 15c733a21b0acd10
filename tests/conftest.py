"""Shared fixtures for the yieldos test suite.

- ``fd_leak_check`` (autouse): every test must leave /proc/self/fd as it found it.
- ``hang_watchdog`` (autouse): a test that blocks the process (e.g. a kernel that
  blocks in os.read on a blocking fd) fails with ``Hang`` instead of hanging the run.
- ``poller``: parametrized over every poller backend the kernel offers.
- ``run(main, *args, poller=...)``: run ``main`` on a fresh kernel that is closed afterwards.

ResourceWarning is an error: pyproject holds ``filterwarnings = ["error::ResourceWarning"]``
(the lead adds it); ``pytest_configure`` below adds the same line so the suite is strict
even before that lands.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import signal
import sys
from types import ModuleType

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import kernel  # noqa: E402

POLLERS = ["epoll", "selectors", "poll", "select"]

# Seconds after which a single test is considered hung.
HANG_SECONDS = 10.0


def pytest_configure(config):
    # Mirrors pyproject's filterwarnings = ["error::ResourceWarning"].
    config.addinivalue_line("filterwarnings", "error::ResourceWarning")
    config.addinivalue_line("filterwarnings", "error::pytest.PytestUnraisableExceptionWarning")


def load_example(name: str) -> ModuleType:
    """Import examples/<name>.py as a module (examples/ is not a package), once."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(REPO, "examples", f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def run(main, *args, poller: str = "auto"):
    """Run ``main`` on a fresh kernel with the given poller; the kernel is closed after."""
    with kernel.Kernel(poller=poller) as k:
        return k.run(main, *args)


def open_fds() -> dict:
    """Map fd number -> what it points at, for every fd open in this process."""
    result = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            result[int(name)] = os.readlink("/proc/self/fd/" + name)
        except OSError:
            # The directory fd used by listdir itself is gone by now.
            pass
    return result


def _collect():
    for _ in range(3):  # PyPy needs several passes to run all finalizers.
        gc.collect()


@pytest.fixture(autouse=True)
def fd_leak_check():
    before = open_fds()
    yield
    leaked = _new_fds(before)
    if leaked:
        # Only garbage may still hold them (sockets in reference cycles; PyPy has no
        # refcounting): collect, which also raises their ResourceWarnings here, in this test.
        _collect()
        leaked = _new_fds(before)
    if leaked:
        pytest.fail(f"test leaked file descriptors: {leaked!r}", pytrace=False)


def _new_fds(before: dict) -> dict:
    return {fd: target for fd, target in open_fds().items() if fd not in before}


class Hang(BaseException):
    """Raised by the watchdog in the main thread when a test blocks too long."""


@pytest.fixture(autouse=True)
def hang_watchdog(request):
    # A test module may give its tests longer with a HANG_SECONDS of its own.
    seconds = getattr(request.module, "HANG_SECONDS", HANG_SECONDS)

    def on_alarm(signum, frame):
        raise Hang(f"test still running after {seconds:.0f} s: something blocked")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(params=POLLERS)
def poller(request) -> str:
    return request.param
