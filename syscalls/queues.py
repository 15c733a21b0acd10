"""Queues: hand items from producer tasks to consumer tasks, with back-pressure.

A queue is the pipe of the task world: one task puts items in, another takes
them out, in order, and whoever is too early waits. A *bounded* queue
(``maxsize > 0``) also makes a producer that runs ahead wait for the
consumers, as a full pipe blocks its writer; that back-pressure is what keeps
a fast producer from filling memory. ``join()`` with ``task_done()`` lets a
producer wait until every item has been *processed*, not merely taken::

    def producer(q):
        for n in range(10):
            yield q.put(n)            # waits while the queue is full
        q.close()                     # consumers drain what is left, then stop

    def consumer(q):
        while True:
            try:
                n = yield q.get()     # waits while the queue is empty
            except QueueClosed:
                return
            print(n)
            q.task_done()

    async def consumer(q):            # the same, in an ``async def`` task
        async for n in q:
            print(n)
            q.task_done()

Built only from public traps and calls (`wait_on`, `wakeup`, `operation`),
with these invariants (they are what makes it fair and cancellation-safe):

* **Hand-off.** A ``get`` on an empty queue parks its task on the queue's
  getter channel, whose waiters the kernel keeps in arrival order. A ``put``
  that finds a getter parked hands the item to the oldest one,
  ``wakeup(channel, 1, item)``: the task resumes with the item as the result
  of its ``get``, and the item never sits in the buffer, where a later
  ``get`` could barge in ahead of the one that waited. A blocked putter
  waits on a `_Putter` of its own, kept in FIFO order in ``_putters``; a
  ``get`` that frees a slot in a full queue moves the oldest putter's item
  into the buffer and wakes it. So getters are served, and putters
  admitted, strictly in arrival order.
* **Getters wait only on an empty buffer; putters only on a full one.** Hence
  a ``get`` never has to look at waiting getters ahead of it (there are
  items only when none wait), a ``put`` looks for a getter only when the
  buffer is empty, and never overtakes a waiting putter (the buffer stays
  full while any wait).
* **Cancellation never loses or duplicates an item.** The kernel takes a
  getter killed or timed out while parked off the channel at once, so a
  ``wakeup`` can only hand an item to a task that is still waiting, and a
  return of 1 means it *has* it: it is READY, keeps its result, and gets a
  kill or timeout at its *next* trap. A putter interrupted while parked was
  admitted nothing: it removes itself from the deque and re-raises. A killed
  putter's ``put`` either returned (its item is in the queue) or raised (it
  never was).

**The fast paths.** A ``get`` is one trap and no generator: a conditional
wait (``wait_on(channel, attempt)``), whose attempt, run by the kernel at the
trap, takes an item if there is one and parks the task only if there is
none; that one trap object serves every ``get`` of the queue. A ``put`` is
an operation with a fast path (``@operation(attempt=...)``): handing the item
to a getter, or storing it, costs one trap; only a put on a full queue runs
the subroutine that waits. Passing an item between two tasks that take turns
is therefore two traps and no subroutine.
"""

from __future__ import annotations

import enum
import functools
import heapq
import queue as _stdqueue
from collections import deque
from typing import Any, Generator, Generic, TypeVar, cast

from kernel.traps import WaitOn
from syscalls import WOULD_BLOCK, operation, wait_on, waiting, wakeup

__all__ = [
    "LifoQueue",
    "PriorityQueue",
    "Queue",
    "QueueClosed",
    "QueueEmpty",
    "QueueFull",
]

T = TypeVar("T")


class QueueEmpty(_stdqueue.Empty):
    """``get_nowait()`` on an empty (open) queue.

    A subclass of the standard library's `queue.Empty`, so code written for
    thread queues (``except queue.Empty:``) keeps working.
    """


class QueueFull(_stdqueue.Full):
    """``put_nowait()`` on a full queue. A subclass of the standard `queue.Full`."""


class QueueClosed(RuntimeError):
    """The queue is closed: no more puts, and (once drained) no more gets.

    Raised by ``put``/``put_nowait`` after `Queue.close`, by ``get``/``get_nowait``
    once the items left at close have all been taken, and in every task that was
    blocked in ``get`` or ``put`` when the queue closed.
    """


class _PutState(enum.Enum):
    WAITING = "waiting"  # parked on its putter, nothing decided yet
    ADMITTED = "admitted"  # its item was moved into the buffer
    CLOSED = "closed"  # woken by close(): raise QueueClosed


class _Putter(Generic[T]):
    """One blocked ``put``: the wait channel its task parks on, with the item it
    brings, which a ``get`` that frees a slot moves into the buffer."""

    __slots__ = ("queue", "item", "state")

    def __init__(self, q: Queue[T], item: T) -> None:
        self.queue = q
        self.item = item
        self.state = _PutState.WAITING

    def __repr__(self) -> str:
        return f"<put on {self.queue!r}>"


class _Channel:
    """A wait channel of a queue: where its getters park, or its joiners. The repr
    is what a deadlock report and ``ps`` show."""

    __slots__ = ("queue", "what")

    def __init__(self, q: Queue[Any], what: str) -> None:
        self.queue = q
        self.what = what

    def __repr__(self) -> str:
        return f"<{self.what} on {self.queue!r}>"


class Queue(Generic[T]):
    """A FIFO queue between tasks; ``maxsize <= 0`` means unbounded.

    Blocking methods (``put``, ``get``, ``join``) are traps: use them as
    ``yield q.get()`` in a generator task, ``await q.get()`` in an ``async def``
    one. The others (``put_nowait``, ``get_nowait``, ``task_done``, ``close``,
    ``qsize``...) are plain calls and never block.

    Subclasses change only the storage: ``_init`` makes ``self._items``, any
    container whose ``len`` is the number of items, and ``_push`` and ``_pop``
    put in and take out: see `LifoQueue`, `PriorityQueue`.
    """

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._getters = _Channel(self, "get")  # where blocked gets park (the kernel's FIFO)
        self._putters: deque[_Putter[T]] = deque()  # blocked puts, oldest first
        self._unfinished = 0  # items put and not yet task_done()
        self._all_done = _Channel(self, "join")  # woken when _unfinished reaches 0
        self._closed = False
        self._init()
        # The get trap: made once, as traps are immutable (a cycle the GC collects).
        self._get: WaitOn[T] = wait_on(self._getters, self._get_now)

    # ── Storage: what subclasses override ────────────────────────────────

    def _init(self) -> None:
        self._items: Any = deque()  # (Any: each subclass keeps its own container here)

    def _push(self, item: T) -> None:
        self._items.append(item)

    def _pop(self) -> T:
        return cast(T, self._items.popleft())

    # ── State ────────────────────────────────────────────────────────────

    def qsize(self) -> int:
        """How many items are in the queue (not counting those of blocked putters)."""
        return len(self._items)

    def empty(self) -> bool:
        """True if a ``get`` would have to wait (or raise `QueueClosed`)."""
        return not self._items

    def full(self) -> bool:
        """True if a ``put`` would have to wait (never, for an unbounded queue)."""
        return 0 < self.maxsize <= len(self._items)

    @property
    def closed(self) -> bool:
        """True once `close` has been called."""
        return self._closed

    def __repr__(self) -> str:
        size = len(self._items)
        if self.maxsize > 0:
            parts = [f"{size}/{self.maxsize} items"]
        else:
            parts = [f"{size} item{'' if size == 1 else 's'} (unbounded)"]
        n = waiting(self._getters)
        if n:
            parts.append(f"{n} getter{'' if n == 1 else 's'} waiting")
        if self._putters:
            n = len(self._putters)
            parts.append(f"{n} putter{'' if n == 1 else 's'} waiting")
        if self._unfinished:
            parts.append(f"{self._unfinished} unfinished")
        if self._closed:
            parts.append("closed")
        return f"<{type(self).__name__} {', '.join(parts)}>"

    # ── Putting ──────────────────────────────────────────────────────────

    def _put_now(self, item: T) -> Any:
        """Put's fast path (the kernel runs it at the trap): hand ``item`` to the
        oldest waiting getter, or store it if there is room; WOULD_BLOCK if full."""
        if self._closed:
            raise QueueClosed(f"put on {self!r}")
        if not self._items and wakeup(self._getters, 1, item):
            self._unfinished += 1  # the getter has it: its get returns it
            return None
        if 0 < self.maxsize <= len(self._items):
            return WOULD_BLOCK
        self._push(item)
        self._unfinished += 1
        return None

    def put_nowait(self, item: T) -> None:
        """Put ``item`` if it can be done at once; else raise `QueueFull`
        (`QueueClosed` if the queue is closed)."""
        if self._put_now(item) is WOULD_BLOCK:
            raise QueueFull(f"put_nowait on {self!r}")

    @operation(attempt=_put_now)
    def put(self, item: T) -> Generator[Any, Any, None]:
        """Put ``item`` in the queue, waiting while it is full (``yield q.put(x)``).

        Putters waiting on a full queue are admitted in arrival order. Raises
        `QueueClosed` if the queue is closed, also if it closes while this waits.
        If the task is killed or times out while waiting, the item was not put.
        """
        if self._put_now(item) is not WOULD_BLOCK:  # (the fast path, when run alone)
            return
        w = _Putter(self, item)
        self._putters.append(w)
        try:
            yield wait_on(w)
        except BaseException:
            if w.state is _PutState.WAITING:  # not admitted: leave the line
                try:
                    self._putters.remove(w)
                except ValueError:
                    pass  # a waker popped it, found it leaving, and passed it over
            raise
        if w.state is _PutState.CLOSED:
            raise QueueClosed(f"{self!r} closed while a put waited")
        assert w.state is _PutState.ADMITTED, f"woken {w!r} in state {w.state}"

    # ── Getting ──────────────────────────────────────────────────────────

    def _take(self) -> T:
        """Pop the next stored item, and let the oldest waiting putter into the freed slot."""
        item = self._pop()
        while self._putters:
            w = self._putters.popleft()
            if wakeup(w, 1):  # 0: a putter on its way out (killed, timed out): skip it
                self._push(w.item)
                w.state = _PutState.ADMITTED
                self._unfinished += 1
                break
        return item

    def _get_now(self) -> T:
        """Get's attempt (the kernel runs it at the trap): the next item if there is
        one, `QueueClosed` if the queue is closed and drained, else WOULD_BLOCK."""
        if self._items:
            return self._take()
        if self._closed:
            raise QueueClosed(f"get on {self!r}")
        return WOULD_BLOCK  # type: ignore[no-any-return]

    def get_nowait(self) -> T:
        """Take the next item if there is one; else raise `QueueEmpty` (`QueueClosed`
        if the queue is closed and drained)."""
        item = self._get_now()
        if item is WOULD_BLOCK:
            raise QueueEmpty(f"get_nowait on {self!r}")
        return item

    def get(self) -> WaitOn[T]:
        """Take the next item, waiting while the queue is empty (``x = yield q.get()``).

        Getters are served in arrival order. After `close`, the remaining items
        are still handed out; then `QueueClosed` is raised (also in every getter
        that was waiting). A getter killed or timed out while it waits has
        taken nothing: the item goes to the next getter.

        The trap is a conditional wait on the queue's getter channel, the same
        object for every call: nothing happens until it is yielded or awaited.
        """
        return self._get

    # ── Closing ──────────────────────────────────────────────────────────

    def close(self) -> None:
        """Close the queue: no more puts; getters take what is left, then get `QueueClosed`.

        Every task blocked in ``get`` or ``put`` wakes at once with `QueueClosed`
        (a blocked put's item is not added). Closing twice does nothing.
        ``join`` still waits for ``task_done`` of every item that was put.
        """
        if self._closed:
            return
        self._closed = True
        message = f"{self!r} closed while a get waited"
        wakeup(self._getters, error=functools.partial(QueueClosed, message))
        while self._putters:
            w = self._putters.popleft()
            if wakeup(w, 1):
                w.state = _PutState.CLOSED

    # ── Work accounting: task_done / join ────────────────────────────────

    def task_done(self) -> None:
        """Say that an item taken from the queue has been processed (once per item).

        When every item ever put has been task_done, the tasks in ``join`` wake.
        ValueError if called more times than items were put.
        """
        if self._unfinished <= 0:
            raise ValueError(f"task_done() called more times than items were put in {self!r}")
        self._unfinished -= 1
        if self._unfinished == 0:
            wakeup(self._all_done)

    @operation
    def join(self) -> Generator[Any, Any, None]:
        """Wait until every item put in the queue has been task_done (``yield q.join()``).

        Returns at once if none is unfinished. A task waiting here is released
        when the count reaches zero, even if more items are put before it runs.
        """
        if self._unfinished:
            yield wait_on(self._all_done)

    # ── async for ────────────────────────────────────────────────────────

    def __aiter__(self) -> Queue[T]:
        """``async for item in q:`` gets items until the queue is closed and drained.
        (In a generator task, loop on ``yield q.get()`` and catch `QueueClosed`.)"""
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except QueueClosed:
            raise StopAsyncIteration from None


class LifoQueue(Queue[T]):
    """A stack between tasks: ``get`` takes the most recently put item.

    Waiting getters and putters are still served in arrival order.
    """

    def _init(self) -> None:
        self._items: list[T] = []

    def _push(self, item: T) -> None:
        self._items.append(item)

    def _pop(self) -> T:
        return self._items.pop()


class PriorityQueue(Queue[T]):
    """A queue that hands out the smallest item first (a `heapq` heap).

    Items must be comparable with each other. To queue objects that are not,
    or to keep equal priorities in FIFO order, put tuples
    ``(priority, seq, item)`` with ``seq`` from ``itertools.count()``: the
    unique ``seq`` breaks ties before ``item`` is ever compared::

        seq = itertools.count()
        yield q.put((2, next(seq), job))

    Blocked putters on a full queue are admitted in arrival order, whatever
    their priority.
    """

    def _init(self) -> None:
        self._items: list[Any] = []  # Any: T is not declared comparable; heapq checks it

    def _push(self, item: T) -> None:
        heapq.heappush(self._items, item)

    def _pop(self) -> T:
        return cast(T, heapq.heappop(self._items))
