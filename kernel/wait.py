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
(the undo recorded when it parked).
"""

from __future__ import annotations

from collections.abc import Hashable

from .task import Task


class WaitChannels:
    """The tasks parked on each channel, in the order they arrived."""

    def __init__(self) -> None:
        self._waiters: dict[Hashable, dict[Task, None]] = {}

    def sleep_on(self, channel: Hashable, task: Task) -> None:
        """Park ``task`` on ``channel`` (the caller records the undo: `unpark`)."""
        queue = self._waiters.get(channel)
        if queue is None:
            self._waiters[channel] = {task: None}
        else:
            queue[task] = None

    def remove(self, channel: Hashable, task: Task) -> None:
        """Take ``task`` off ``channel`` (it was killed or timed out)."""
        queue = self._waiters.get(channel)
        if queue is not None:
            queue.pop(task, None)
            if not queue:
                del self._waiters[channel]

    def unpark(self, task: Task) -> None:
        """`remove` for a task parked by the `wait_on` trap (its undo): the channel is
        its trap's."""
        self.remove(task.trap.channel, task)

    def pop(self, channel: Hashable) -> Task | None:
        """Remove and return the task parked longest on ``channel`` (None if none is)."""
        queue = self._waiters.get(channel)
        if queue is None:
            return None
        for task in queue:  # the first key is the oldest waiter (a loop: no iter() to call)
            del queue[task]
            break
        if not queue:
            del self._waiters[channel]
        return task

    def take(self, channel: Hashable, n: int | None) -> list[Task]:
        """Remove and return up to ``n`` (None: all) tasks parked on ``channel``, oldest first."""
        queue = self._waiters.get(channel)
        if queue is None:
            return []
        if n is None or n >= len(queue):
            del self._waiters[channel]
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
        return len(self._waiters.get(channel, ()))
