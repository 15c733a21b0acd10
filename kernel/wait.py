"""Wait channels: sleep on a value, be woken by whoever names the same value.

This is xv6's ``sleep(chan)`` / ``wakeup(chan)``, the one mechanism every
blocking object in `syscalls` (locks, events, queues, conditions...) is
built on. A *channel* is any hashable value, usually the object being
waited for. ``wait_on(chan)`` parks the running task on it;
``wakeup(chan, n)`` makes up to ``n`` of the tasks parked on it ready, the
longest-waiting first, and says how many it woke.

A plain wakeup is not a message: the woken task resumes from ``wait_on``
with ``None`` and must look again at the state it waited for, exactly as in
xv6, where ``sleep`` is always called in a loop. A primitive that wants
strict first-come-first-served hand-off gives each waiter a channel of its
own and decides, before waking it, what that waiter gets.

A wakeup may also *carry* the outcome, as a pipe's writer copies its bytes
straight into a blocked reader's buffer: ``wakeup(chan, 1, value)`` resumes
the oldest waiter with ``value`` as the result of its ``wait_on``, and
``wakeup(chan, n, error=E)`` raises ``E()`` in each woken task. The waker
has then done the waiter's work for it (given it the item, the lock, the
permit), so the waiter has nothing to look at again. This *direct
hand-off* is fair by construction: the channel's FIFO order is the order
of service, and a task that arrives later cannot barge in between the
wakeup and the waiter's resumption.

Each channel's waiters are kept in a dict used as an ordered set: FIFO
order for wakeup, and O(1) removal when a waiter is killed or times out
(the undo recorded when it parked). A channel with a single waiter, the
usual case (syscalls/sync.py gives every waiter a channel of its own, and a
queue's getters mostly come one at a time), maps to the task itself: no
dict is made and thrown away for each wait. A second waiter turns the entry
into a dict; an empty one is deleted, so a channel nobody waits on costs
nothing.

Discussion: the two paths every queue hand-off takes, a ``wait_on`` that
parks (`sysproc.sys_wait_on`) and a ``wakeup(chan, 1, value)``
(`Kernel.wakeup`), read and write `WaitChannels.waiters` themselves for the
one-waiter case instead of calling `sleep_on` and `pop`: a Python call is a
large share of a trap's cost on CPython. Anything else goes through the
methods, which are the definition of the representation.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Callable

from .task import Task


class WaitChannels:
    """The tasks parked on each channel, in the order they arrived."""

    def __init__(self) -> None:
        # channel -> its only waiter (a Task), or a dict of its waiters (Task -> None,
        # oldest first), never empty. (Any: mypy cannot narrow the `type() is` tests.)
        # Public to the kernel's hot paths (see the discussion above), to nobody else.
        self.waiters: dict[Hashable, Any] = {}
        # The undo of every wait_on (Kernel.park), bound once rather than at every wait.
        self.undo: Callable[[Task], None] = self.unpark

    def sleep_on(self, channel: Hashable, task: Task) -> None:
        """Park ``task`` on ``channel`` (the caller records the undo: `unpark`)."""
        queue = self.waiters.get(channel)
        if queue is None:
            self.waiters[channel] = task
        elif type(queue) is dict:
            queue[task] = None
        else:  # the second waiter
            self.waiters[channel] = {queue: None, task: None}

    def remove(self, channel: Hashable, task: Task) -> None:
        """Take ``task`` off ``channel`` (it was killed or timed out)."""
        queue = self.waiters.get(channel)
        if queue is task:
            del self.waiters[channel]
        elif type(queue) is dict:
            queue.pop(task, None)
            if not queue:
                del self.waiters[channel]

    def unpark(self, task: Task) -> None:
        """`remove` for a task parked by the `wait_on` trap (its undo): the channel is
        its trap's."""
        self.remove(task.trap.channel, task)

    def pop(self, channel: Hashable) -> Task | None:
        """Remove and return the task parked longest on ``channel`` (None if none is)."""
        queue = self.waiters.get(channel)
        task: Task | None
        if type(queue) is not dict:  # None, or the only waiter
            task = queue
            if task is not None:
                del self.waiters[channel]
            return task
        for task in queue:  # the first key is the oldest waiter (a loop: no iter() to call)
            del queue[task]
            break
        if not queue:
            del self.waiters[channel]
        return task

    def take(self, channel: Hashable, n: int | None) -> list[Task]:
        """Remove and return up to ``n`` (None: all) tasks parked on ``channel``, oldest first."""
        queue = self.waiters.get(channel)
        if queue is None or n == 0:
            return []
        if type(queue) is not dict:
            del self.waiters[channel]
            return [queue]
        if n is None or n >= len(queue):
            del self.waiters[channel]
            return list(queue)
        woken: list[Task] = []
        for task in queue:
            if len(woken) == n:
                break
            woken.append(task)
        for task in woken:
            del queue[task]
        return woken

    def waiting(self, channel: Hashable) -> int:
        """How many tasks are parked on ``channel``."""
        queue = self.waiters.get(channel)
        if type(queue) is dict:
            return len(queue)
        return 0 if queue is None else 1
