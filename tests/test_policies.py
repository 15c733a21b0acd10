"""Scheduling policies (kernel/scheduler.py, kernel/policies.py).

Each policy runs a fixed workload on a `VirtualClock` and the whole order of
turns is asserted. A turn is a task appending ``(name, i)`` to a shared log
between ``sched_yield()`` calls; for fair share and stride the tasks charge
known CPU with ``clock.advance`` (in units of 1/1024 s, which add up exactly
in binary, so ties are real ties and break FIFO). Then: seeded orders repeat
and differ by seed, lottery shares stay inside binomial bounds, a program with
spawns, sleeps, joins, kills, wait channels and socket I/O gives the same
results under every policy with no task lost or run twice, `make_policy`
parses its specs, and the example's self-test passes.
"""

from __future__ import annotations

import importlib.util
import math
import random
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import kernel
from conftest import REPO
from kernel import Instrument, TaskState, VirtualClock
from kernel.policies import (
    STRIDE1,
    FairSharePolicy,
    LotteryPolicy,
    PriorityPolicy,
    RandomPolicy,
    StridePolicy,
)
from kernel.scheduler import POLICY_NAMES, RunQueue, make_policy
from kernel.task import SchedInfo, Task
from syscalls import (
    join,
    kill,
    recv,
    sched_yield,
    sendall,
    sleep,
    spawn,
    wait_on,
    wakeup,
)

#: One unit of virtual CPU time: a power of two, so sums of units are exact.
U = 1 / 1024

#: A spec for every policy, with two seeds for the seeded ones.
SPECS = ["fifo", "priority", "fair", "stride", "lottery:1", "lottery:2", "random:1", "random:2"]


# ── Helpers ──────────────────────────────────────────────────────────────


def run(main, policy, clk=None):
    """Run ``main`` on a fresh kernel with ``policy`` and a virtual clock."""
    with kernel.Kernel(policy=policy, clock=clk or VirtualClock()) as k:
        return k.run(main)


def turns(log, clk, name, n, cpu=0.0):
    """n turns: log (name, i), use ``cpu`` seconds of (virtual) CPU, give the CPU back."""
    for i in range(n):
        if i:
            yield sched_yield()
        log.append((name, i))
        clk.advance(cpu)


async def turns_async(log, clk, name, n, cpu=0.0):
    """The same, as an ``async def`` task."""
    for i in range(n):
        if i:
            await sched_yield()
        log.append((name, i))
        clk.advance(cpu)


def order(policy, workers, target=turns):
    """Spawn ``workers`` (name, turns, cpu, priority, tickets) from main, join them all,
    and return the log of turns."""
    log = []
    clk = VirtualClock()

    def main():
        tasks = []
        for name, n, cpu, priority, tickets in workers:
            task = yield spawn(
                target, log, clk, name, n, cpu, name=name, priority=priority, tickets=tickets
            )
            tasks.append(task)
        for task in tasks:
            yield join(task)

    run(main, policy, clk)
    return log


def names(log):
    return " ".join(f"{name}{i}" for name, i in log)


def idle():
    yield sched_yield()


def bare_task(tid, priority=0, tickets=100):
    """A task that is only ever pushed and popped, never run."""
    return Task(tid, f"t{tid}", idle(), sched=SchedInfo(priority, tickets))


# ── FIFO and priority ────────────────────────────────────────────────────

THREE = [("A", 3, 0.0, 1, 100), ("B", 3, 0.0, 3, 100), ("C", 3, 0.0, 2, 100)]


@pytest.mark.parametrize("target", [turns, turns_async])
def test_fifo_takes_turns(target):
    assert names(order(RunQueue(), THREE, target)) == "A0 B0 C0 A1 B1 C1 A2 B2 C2"


@pytest.mark.parametrize("target", [turns, turns_async])
def test_priority_runs_the_highest_first_and_ties_in_fifo_order(target):
    workers = [*THREE, ("D", 3, 0.0, 3, 100)]
    # B and D (3) share the CPU in turns; C (2) waits for both, A (1) for everyone:
    # a high-priority task that yields is picked again at once.
    assert names(order(PriorityPolicy(), workers, target)) == (
        "B0 D0 B1 D1 B2 D2 C0 C1 C2 A0 A1 A2"
    )


def test_priority_starves_a_low_task_while_a_high_one_is_ready():
    log = []

    def low():
        log.append("low ran")
        yield sched_yield()

    def high():
        for _ in range(100):  # 100 yields: each one puts it straight back, first
            yield sched_yield()
        log.append("high done")

    def main():
        tasks = [(yield spawn(low, priority=-1)), (yield spawn(high, priority=1))]
        for task in tasks:
            yield join(task)

    run(main, PriorityPolicy())
    assert log == ["high done", "low ran"]


# ── Fair share ───────────────────────────────────────────────────────────


@pytest.mark.parametrize("target", [turns, turns_async])
def test_fair_share_gives_cpu_not_turns(target):
    # A uses 1 unit a turn, B 3: the least-served runs next, so A takes 3 turns per
    # turn of B; a tie (equal vruntime) goes to the entry queued first.
    log = order(FairSharePolicy(), [("A", 9, U, 0, 100), ("B", 3, 3 * U, 0, 100)], target)
    assert names(log) == "A0 B0 A1 A2 B1 A3 A4 A5 B2 A6 A7 A8"


def test_fair_share_weighs_by_tickets():
    # 400 tickets age a quarter as fast as 100: A gets 4 units of CPU per unit of B.
    log = order(FairSharePolicy(), [("A", 8, U, 0, 400), ("B", 3, U, 0, 100)])
    assert names(log) == "A0 B0 A1 A2 A3 B1 A4 A5 A6 A7 B2"


def sleeper_order(policy):
    """A and B burn 1 unit a turn; S sleeps 8 units first, then wants turns too."""
    log = []
    clk = VirtualClock()

    def sleeper():
        yield sleep(8 * U)
        yield from turns(log, clk, "S", 4, U)

    def main():
        tasks = [
            (yield spawn(turns, log, clk, "A", 8, U)),
            (yield spawn(turns, log, clk, "B", 8, U)),
            (yield spawn(sleeper)),
        ]
        for task in tasks:
            yield join(task)

    run(main, policy, clk)
    return names(log)


def test_fair_share_gives_a_sleeper_no_credit_for_sleeping():
    # S wakes at 10 units (it fell asleep at 2), when A and B have used 5 each. Raised
    # to min_vruntime (4, B's when it was last picked), it runs once and then takes
    # turns with them; kept at 0, it would have run 5 turns in a row.
    policy = FairSharePolicy()
    assert sleeper_order(policy) == ("A0 B0 A1 B1 A2 B2 A3 B3 A4 B4 S0 A5 B5 S1 A6 B6 S2 A7 B7 S3")
    assert policy.min_vruntime == 7 * U  # the last picks (S3, then main) were at 7 units


def test_fair_share_charges_only_steps_that_used_cpu():
    policy = FairSharePolicy()
    a, b = bare_task(1), bare_task(2)
    policy.push(a)
    policy.push(b)
    policy.stop(a, 0.0)  # no CPU used: no new entry, nothing changes
    assert len(policy._heap) == 2
    policy.stop(a, 0.5)  # a is queued: charged and re-keyed behind b
    assert len(policy) == 2 and len(policy._heap) == 3
    assert [policy.pop_next(), policy.pop_next()] == [b, a]
    assert len(policy) == 0 and policy._heap == []  # the dead entry was thrown away
    assert a.sched.data.vruntime == 0.5 and policy.min_vruntime == 0.5


def test_fair_share_clear_forgets_live_and_dead_entries():
    policy = FairSharePolicy()
    a, b = bare_task(1), bare_task(2)
    policy.push(a)
    policy.push(b)
    policy.stop(a, U)  # leaves a dead entry of a's behind
    policy.clear()
    assert len(policy) == 0 and a.sched.data.queued is None and b.sched.data.queued is None
    policy.push(b)  # no "pushed twice"
    policy.push(a)
    assert [policy.pop_next(), policy.pop_next()] == [b, a]  # b: 0, a: U behind


# ── Stride ───────────────────────────────────────────────────────────────


@pytest.mark.parametrize("target", [turns, turns_async])
def test_stride_gives_turns_in_proportion_to_tickets(target):
    # Strides 2, 3 and 6 (in STRIDE1/600): per 6 turns, A 3, B 2, C 1; ties go FIFO.
    workers = [("A", 6, 0.0, 0, 300), ("B", 4, 0.0, 0, 200), ("C", 2, 0.0, 0, 100)]
    assert names(order(StridePolicy(), workers, target)) == ("A0 B0 C0 A1 B1 A2 C1 B2 A3 A4 B3 A5")


def test_stride_divides_turns_not_cpu():
    # Equal tickets, so equal turns, however much CPU each turn takes.
    log = order(StridePolicy(), [("A", 3, U, 0, 100), ("B", 3, 9 * U, 0, 100)])
    assert names(log) == "A0 B0 A1 B1 A2 B2"


def test_stride_starts_a_sleeper_at_the_global_pass():
    # S falls asleep at 2 units and wakes at 6 (the clock A and B advance): it comes
    # back at the global pass, below A's and B's, so it goes first once, then in turn.
    policy = StridePolicy()
    log = []
    clk = VirtualClock()

    def sleeper():
        yield sleep(4 * U)
        yield from turns(log, clk, "S", 3)

    def main():
        tasks = [
            (yield spawn(turns, log, clk, "A", 6, U)),
            (yield spawn(turns, log, clk, "B", 6, U)),
            (yield spawn(sleeper)),
        ]
        for task in tasks:
            yield join(task)

    run(main, policy, clk)
    assert names(log) == "A0 B0 A1 B1 A2 B2 S0 A3 B3 S1 A4 B4 S2 A5 B5"
    stride = STRIDE1 // 100
    assert policy.global_pass == 5 * stride  # the last picks: A5, B5, then main raised to it


# ── Lottery and random ───────────────────────────────────────────────────


def test_lottery_shares_stay_within_binomial_bounds():
    policy = LotteryPolicy(seed=3)
    tasks = [bare_task(1, tickets=100), bare_task(2, tickets=200), bare_task(3, tickets=400)]
    for task in tasks:
        policy.push(task)
    draws = 70_000
    wins: Counter[int] = Counter()
    for _ in range(draws):
        task = policy.pop_next()
        wins[task.tid] += 1
        policy.push(task)
    total = sum(t.tickets for t in tasks)
    for task in tasks:
        p = task.tickets / total
        mean, sd = draws * p, math.sqrt(draws * p * (1 - p))
        # Five standard deviations: a fair lottery is outside this once in ~2 million
        # runs (the seed makes this run the same every time anyway).
        assert abs(wins[task.tid] - mean) <= 5 * sd, (task.tid, wins, mean, sd)
    assert sum(wins.values()) == draws and len(policy) == 3


def test_lottery_favours_the_big_ticket_holder():
    log = order(LotteryPolicy(seed=5), [("A", 4, 0.0, 0, 1), ("B", 4, 0.0, 0, 10_000)])
    assert sorted(log) == [(n, i) for n in "AB" for i in range(4)]
    # With 10000 tickets to 1, B's four turns all come before A's second one.
    assert log.index(("B", 3)) < log.index(("A", 1))


SIX = [(name, 4, 0.0, 0, 100) for name in "ABCDEF"]


def is_interleaving(log, workers):
    """Every turn of every worker exactly once, each worker's turns in order."""
    if sorted(log) != sorted((w[0], i) for w in workers for i in range(w[1])):
        return False
    return all([i for n, i in log if n == w[0]] == list(range(w[1])) for w in workers)


@pytest.mark.parametrize("cls", [RandomPolicy, LotteryPolicy])
def test_seeded_orders_repeat_and_differ_by_seed(cls):
    first = order(cls(seed=1), SIX)
    assert is_interleaving(first, SIX)
    assert order(cls(seed=1), SIX) == first  # the same seed: the very same order
    other = order(cls(seed=2), SIX)
    assert is_interleaving(other, SIX)
    assert other != first
    assert first != order(RunQueue(), SIX)  # and neither is plain round robin


@pytest.mark.parametrize("cls", [RandomPolicy, LotteryPolicy])
def test_seeded_orders_are_the_same_for_async_tasks(cls):
    assert order(cls(seed=4), SIX, turns_async) == order(cls(seed=4), SIX)


def test_random_policy_picks_uniformly():
    policy = RandomPolicy(seed=11)
    tasks = [bare_task(tid) for tid in range(5)]
    for task in tasks:
        policy.push(task)
    draws = 50_000
    wins = Counter()
    for _ in range(draws):
        task = policy.pop_next()
        wins[task.tid] += 1
        policy.push(task)
    sd = math.sqrt(draws * 0.2 * 0.8)
    assert all(abs(wins[t.tid] - draws / 5) <= 5 * sd for t in tasks), wins


# ── Every policy: nothing lost, nothing twice ────────────────────────────


def all_policies():
    return [
        RunQueue(),
        PriorityPolicy(),
        FairSharePolicy(),
        StridePolicy(),
        LotteryPolicy(7),
        RandomPolicy(7),
    ]


@pytest.mark.parametrize("policy", all_policies(), ids=repr)
def test_push_pop_clear_keep_every_task_exactly_once(policy):
    rng = random.Random(1)
    tasks = [bare_task(tid, priority=tid % 3, tickets=1 + tid % 4) for tid in range(20)]
    queued = set()
    popped = 0
    for _ in range(2000):
        idle_tasks = [t for t in tasks if t not in queued]
        if idle_tasks and (not queued or rng.random() < 0.5):
            task = rng.choice(idle_tasks)
            policy.push(task)
            queued.add(task)
        else:
            task = policy.pop_next()
            assert task in queued
            queued.remove(task)
            popped += 1
            if isinstance(policy, FairSharePolicy) and rng.random() < 0.5:
                # Charged after being pushed again, as after a sched_yield.
                policy.push(task)
                queued.add(task)
                policy.stop(task, rng.choice([0.0, U, 3 * U]))
        assert len(policy) == len(queued)
    assert popped > 500
    policy.clear()
    assert len(policy) == 0
    for task in tasks[:3]:  # usable again after a clear: no stale state trips it
        policy.push(task)
    assert {policy.pop_next() for _ in range(3)} == set(tasks[:3])
    assert len(policy) == 0


class Ledger:
    """A policy wrapper that checks the kernel and the policy: every task is pushed
    only when READY and not already queued, and comes out exactly once."""

    def __init__(self, inner):
        self.inner = inner
        self.queued = set()
        self.pushes = 0

    def push(self, task):
        assert task.state is TaskState.READY and task not in self.queued
        self.queued.add(task)
        self.pushes += 1
        self.inner.push(task)
        assert len(self.inner) == len(self.queued)

    def pop_next(self):
        task = self.inner.pop_next()
        assert task in self.queued, f"{task!r} popped but not queued"
        self.queued.remove(task)
        assert len(self.inner) == len(self.queued)
        return task

    def __len__(self):
        return len(self.inner)

    def clear(self):
        self.inner.clear()
        self.queued.clear()


def readline(sock):
    """Read up to a newline (a generator helper, used with ``yield from``)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = yield recv(sock, 1)
        if not chunk:
            return data
        data += chunk
    return data


def mixed_program(sock_a, sock_b, clk):
    """Spawns, sleeps, joins, kills, wait channels and socket I/O, in generator and
    async def tasks; the results do not depend on the order tasks run in."""
    box = []
    cleaned = []

    def producer(n):
        for i in range(n):
            box.append(i)
            wakeup("box")
            yield (sleep(U) if i % 3 == 0 else sched_yield())
        box.append(None)
        wakeup("box")

    async def consumer():
        got = []
        while True:
            while not box:
                await wait_on("box")
            item = box.pop(0)
            if item is None:
                return got
            got.append(item)

    def pinger(n):
        replies = []
        for i in range(n):
            yield sendall(sock_a, b"ping %d\n" % i)
            replies.append((yield from readline(sock_a)))
        return replies

    def ponger():
        while True:
            line = yield from readline(sock_b)
            if not line:
                return "eof"
            yield sendall(sock_b, line.replace(b"ping", b"pong"))

    def tree(depth):
        if depth == 0:
            yield sleep(U * 2)
            return 1
        kids = [(yield spawn(tree, depth - 1)), (yield spawn(tree, depth - 1))]
        total = 1
        for kid in kids:
            total += yield join(kid)
        return total

    def victim(spin):
        try:
            while True:
                if spin:  # always READY: it uses CPU, or the virtual clock would stand still
                    clk.advance(U / 4)
                    yield sched_yield()
                else:
                    yield sleep(math.inf)
        finally:
            cleaned.append(spin)

    async def failing():
        await sleep(50 * U)  # main joins it by then: a failure nobody joins is logged
        raise ValueError("expected")

    def main():
        results = {}
        prod = yield spawn(producer, 20)
        cons = yield spawn(consumer)
        ping = yield spawn(pinger, 10)
        pong = yield spawn(ponger)
        trees = yield spawn(tree, 3)
        sleeping = yield spawn(victim, False)
        spinning = yield spawn(victim, True)
        fails = yield spawn(failing)
        yield sleep(U * 5)
        yield kill(sleeping)
        yield kill(spinning)
        results["killed"] = sorted(cleaned)
        results["consumed"] = yield join(cons)
        yield join(prod)
        results["replies"] = yield join(ping)
        sock_a.shutdown(socket.SHUT_WR)
        results["ponger"] = yield join(pong)
        results["tree"] = yield join(trees)
        try:
            yield join(fails)
        except ValueError as exc:
            results["failed"] = str(exc)
        return results

    return main


class ExitCounter(Instrument):
    def __init__(self):
        self.spawned = []
        self.exits = Counter()

    def spawn(self, task):
        self.spawned.append(task)

    def exit(self, task):
        self.exits[task] += 1


@pytest.mark.parametrize("spec", SPECS)
def test_a_mixed_program_gives_the_same_results_under_every_policy(spec):
    inner = make_policy(spec)
    ledger = Ledger(inner)
    counter = ExitCounter()
    a, b = socket.socketpair()
    clk = VirtualClock()
    with a, b, kernel.Kernel(policy=ledger, clock=clk) as k:
        if isinstance(inner, Instrument):  # the wrapper hides it from Kernel(policy=)
            k.add_instrument(inner)
        k.add_instrument(counter)
        results = k.run(mixed_program(a, b, clk))
    assert results == {
        "killed": [False, True],
        "consumed": list(range(20)),
        "replies": [b"pong %d\n" % i for i in range(10)],
        "ponger": "eof",
        "tree": 15,
        "failed": "expected",
    }
    assert len(counter.spawned) == 1 + 8 + 14  # main, its 8 children, 14 in the tree
    assert all(counter.exits[t] == 1 for t in counter.spawned)
    assert sum(counter.exits.values()) == len(counter.spawned)
    assert not ledger.queued and ledger.pushes > 60


class Boom(Exception):
    pass


class BlowUp(Instrument):
    """Raises out of the run loop (as a kernel bug would) while tasks are queued:
    once all four spinners have started, as the next one is switched to."""

    def __init__(self):
        self.started = set()

    def run(self, task):
        if task.name == "spinner":
            if len(self.started) == 4:
                assert len(self.kernel.runq) == 3  # the other spinners
                raise Boom("in the middle of a pass")
            self.started.add(task)


@pytest.mark.parametrize("spec", POLICY_NAMES)
def test_an_abort_clears_the_queue_and_closes_every_task(spec):
    closed = []

    def spinner():
        try:
            while True:
                yield sched_yield()
        finally:
            closed.append("spinner")

    def main():
        for _ in range(4):
            yield spawn(spinner)
        yield sleep(math.inf)

    policy = make_policy(spec)
    with kernel.Kernel(policy=policy, clock=VirtualClock()) as k:
        k.add_instrument(BlowUp())
        with pytest.raises(Boom):
            k.run(main)
        assert len(k.runq) == 0 and not k.tasks
    assert closed == ["spinner"] * 4


# ── make_policy ──────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "spec, cls, seed",
    [
        ("fifo", RunQueue, None),
        ("priority", PriorityPolicy, None),
        ("fair", FairSharePolicy, None),
        ("stride", StridePolicy, None),
        ("lottery", LotteryPolicy, 0),
        ("lottery:42", LotteryPolicy, 42),
        ("random", RandomPolicy, 0),
        ("random:7", RandomPolicy, 7),
        ("random:-3", RandomPolicy, -3),
    ],
)
def test_make_policy(spec, cls, seed):
    policy = make_policy(spec)
    assert type(policy) is cls
    if seed is not None:
        assert policy.seed == seed
    assert make_policy(spec) is not policy  # a new one each time: one per kernel


def test_make_policy_knows_every_name():
    assert POLICY_NAMES == ("fifo", "priority", "fair", "stride", "lottery", "random")
    assert len({type(make_policy(name)) for name in POLICY_NAMES}) == len(POLICY_NAMES)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("roundrobin", "unknown scheduling policy 'roundrobin': expected one of fifo, priority, "
         "fair, stride, lottery[:SEED], random[:SEED]"),
        ("", "unknown scheduling policy ''"),
        ("Random:1", "unknown scheduling policy 'Random:1'"),
        ("random:x", "bad seed 'x' in 'random:x': expected an integer, as in random:7"),
        ("lottery:", "bad seed '' in 'lottery:'"),
        ("random:1.5", "bad seed '1.5'"),
        ("random: 7", "bad seed ' 7'"),
        ("random:+7", "bad seed '+7'"),
        ("random:1_0", "bad seed '1_0'"),
        ("random:-", "bad seed '-'"),
        ("random:\u0663", "bad seed '\u0663'"),  # an Arabic-Indic 3: a digit, not ASCII
        ("fifo:3", "scheduling policy 'fifo' takes no seed, in 'fifo:3'"),
        ("fair:0", "scheduling policy 'fair' takes no seed"),
    ],
)  # fmt: skip
def test_make_policy_errors(spec, message):
    with pytest.raises(ValueError) as info:
        make_policy(spec)
    assert str(info.value).startswith(message)


def test_same_seed_policies_repeat_through_make_policy():
    assert order(make_policy("random:9"), SIX) == order(make_policy("random:9"), SIX)


def test_reprs_name_the_policy_and_its_seed():
    assert repr(make_policy("random:7")) == "RandomPolicy(seed=7, ready=0)"
    assert repr(make_policy("lottery:2")) == "LotteryPolicy(seed=2, ready=0)"
    assert repr(make_policy("priority")) == "PriorityPolicy(ready=0)"
    assert repr(make_policy("stride")) == "StridePolicy(ready=0, global_pass=0)"
    assert repr(make_policy("fair")) == "FairSharePolicy(ready=0, min_vruntime=0.000000)"


# ── The example ──────────────────────────────────────────────────────────

EXAMPLE = Path(REPO) / "examples" / "policies.py"


def test_example_selftest(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", str(EXAMPLE), "--selftest"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=8.0,  # it needs well under a second; conftest's watchdog fires at 10
    )
    assert proc.returncode == 0, f"exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert proc.stderr == ""
    assert "selftest passed" in proc.stdout


def load_example():
    spec = importlib.util.spec_from_file_location("policies_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_example_on_the_real_clock(tmp_path):
    # Only what holds however the machine's timing goes: FIFO alternates the two CPU
    # tasks, every round trip got its reply, and the timelines are written.
    example = load_example()
    report, written = example.run_policy("fifo", virtual=False, duration=0.02, out=tmp_path)
    assert set(report.stats) == {"cpu-A", "cpu-B", "ping", "echo", "keys"}
    assert abs(report.done["cpu-A"] - report.done["cpu-B"]) <= 1
    assert report.done["ping"] == report.done["echo"]
    assert [p.name for p in written] == ["fifo.svg", "fifo.json"]
    assert all(p.stat().st_size > 0 for p in written)
    assert "cpu-A  CPU-bound" in example.table(report)
