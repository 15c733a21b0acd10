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

Built only from public traps (`wait_on`, `wakeup`, `operation`), with these
invariants (they are what makes it fair and cancellation-safe):

* **Hand-off.** Each blocked getter or putter waits on a `_Waiter` of its own,
  kept in FIFO order in ``_getters`` / ``_putters``. A ``put`` that finds a
  getter waiting writes the item into the oldest getter's waiter and wakes
  that task: the item never sits in the buffer, where a later ``get`` could
  barge in ahead of the one that waited. A ``get`` that frees a slot in a
  full queue moves the oldest waiting putter's item into the buffer and wakes
  it. So getters are served, and putters admitted, strictly in arrival order.
* **Getters wait only on an empty buffer; putters only on a full one.** Hence
  a ``get`` never has to look at waiting getters ahead of it (there are
  items only when none wait), and a ``put`` never overtakes a waiting putter
  (the buffer stays full while any wait).
* **Cancellation never loses or duplicates an item.** A waiter is handed
  something only if `wakeup` found its task still parked (``wakeup`` returns
  1); a task that was handed an item is READY, keeps its result, and gets a
  kill or timeout at its *next* trap. A waiter interrupted while still parked
  was handed nothing: it removes itself from the deque and re-raises. A killed
  putter's ``put`` either returned (its item is in the queue) or raised (it
  never was).
"""

from __future__ import annotations

import enum
import heapq
import queue as _stdqueue
from collections import deque
from typing import Any, Generator, Generic, Optional, TypeVar, cast

from syscalls import operation, wait_on, wakeup

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


class _WaitState(enum.Enum):
    WAITING = "waiting"  # parked on its waiter, nothing decided yet
    HANDED = "handed"  # a getter was given an item / a putter's item was taken in
    CLOSED = "closed"  # woken by close(): raise QueueClosed


class _Waiter(Generic[T]):
    """One blocked ``get`` or ``put``: the wait channel its task parks on, and the
    mailbox the waker writes into (the item, for a getter) before waking it."""

    __slots__ = ("queue", "kind", "item", "state")

    def __init__(self, q: Queue[T], kind: str, item: Optional[T] = None) -> None:
        self.queue = q
        self.kind = kind  # "get" or "put": only for the repr
        self.item = item  # the item handed to a getter, or the item a putter brings
        self.state = _WaitState.WAITING

    def __repr__(self) -> str:
        return f"<{self.kind} on {self.queue!r}>"


class _JoinChannel:
    """The channel ``join()`` waits on: woken (all at once) when the count of
    unfinished items reaches zero."""

    __slots__ = ("queue",)

    def __init__(self, q: Queue[Any]) -> None:
        self.queue = q

    def __repr__(self) -> str:
        return f"<join on {self.queue!r}>"


class Queue(Generic[T]):
    """A FIFO queue between tasks; ``maxsize <= 0`` means unbounded.

    Blocking methods (``put``, ``get``, ``join``) are operations: use them as
    ``yield q.get()`` in a generator task, ``await q.get()`` in an ``async def``
    one. The others (``put_nowait``, ``get_nowait``, ``task_done``, ``close``,
    ``qsize``...) are plain calls and never block.

    Subclasses change only the storage (``_init``, ``_push``, ``_pop``,
    ``_push_back``, ``_size``): see `LifoQueue`, `PriorityQueue`.
    """

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._getters: deque[_Waiter[T]] = deque()  # blocked gets, oldest first
        self._putters: deque[_Waiter[T]] = deque()  # blocked puts, oldest first
        self._unfinished = 0  # items put and not yet task_done()
        self._all_done = _JoinChannel(self)
        self._closed = False
        self._init()

    # ── Storage: what subclasses override ────────────────────────────────

    def _init(self) -> None:
        self._items: deque[T] = deque()

    def _push(self, item: T) -> None:
        self._items.append(item)

    def _pop(self) -> T:
        return self._items.popleft()

    def _push_back(self, item: T) -> None:
        """Return a just-taken item so that it is the next one out."""
        self._items.appendleft(item)

    def _size(self) -> int:
        return len(self._items)

    # ── State ────────────────────────────────────────────────────────────

    def qsize(self) -> int:
        """How many items are in the queue (not counting those of blocked putters)."""
        return self._size()

    def empty(self) -> bool:
        """True if a ``get`` would have to wait (or raise `QueueClosed`)."""
        return self._size() == 0

    def full(self) -> bool:
        """True if a ``put`` would have to wait (never, for an unbounded queue)."""
        return 0 < self.maxsize <= self._size()

    @property
    def closed(self) -> bool:
        """True once `close` has been called."""
        return self._closed

    def __repr__(self) -> str:
        size = self._size()
        if self.maxsize > 0:
            parts = [f"{size}/{self.maxsize} items"]
        else:
            parts = [f"{size} item{'' if size == 1 else 's'} (unbounded)"]
        if self._getters:
            n = len(self._getters)
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

    def _offer(self, item: T) -> bool:
        """Add ``item`` without blocking: hand it to the oldest waiting getter, or
        store it if there is room. False if the queue is full."""
        if self._hand_to_getter(item):
            return True
        if self.full():
            return False
        self._push(item)
        self._unfinished += 1
        return True

    def _hand_to_getter(self, item: T) -> bool:
        while self._getters:
            w = self._getters.popleft()
            # Discussion: wakeup() finds no task when the getter was interrupted
            # (killed, timed out) after parking but has not yet run to remove its
            # waiter. It is leaving with an exception: give the item to the next.
            if wakeup(w, 1):
                w.item, w.state = item, _WaitState.HANDED
                self._unfinished += 1
                return True
        return False

    def put_nowait(self, item: T) -> None:
        """Put ``item`` if it can be done at once; else raise `QueueFull`
        (`QueueClosed` if the queue is closed)."""
        if self._closed:
            raise QueueClosed(f"put on {self!r}")
        if not self._offer(item):
            raise QueueFull(f"put_nowait on {self!r}")

    @operation
    def put(self, item: T) -> Generator[Any, Any, None]:
        """Put ``item`` in the queue, waiting while it is full (``yield q.put(x)``).

        Putters waiting on a full queue are admitted in arrival order. Raises
        `QueueClosed` if the queue is closed, also if it closes while this waits.
        If the task is killed or times out while waiting, the item was not put.
        """
        if self._closed:
            raise QueueClosed(f"put on {self!r}")
        if self._offer(item):
            return
        w = _Waiter(self, "put", item)
        self._putters.append(w)
        try:
            yield wait_on(w)
        except BaseException:
            self._withdraw(self._putters, w)
            raise
        if w.state is _WaitState.CLOSED:
            raise QueueClosed(f"{self!r} closed while a put waited")
        assert w.state is _WaitState.HANDED, f"woken {w!r} in state {w.state}"

    # ── Getting ──────────────────────────────────────────────────────────

    def _take(self) -> T:
        """Pop the next stored item, and let the oldest waiting putter into the freed slot."""
        item = self._pop()
        while self._putters:
            w = self._putters.popleft()
            if wakeup(w, 1):  # as in _hand_to_getter: skip a putter on its way out
                self._push(cast(T, w.item))  # a putter always brings its item
                w.state = _WaitState.HANDED
                self._unfinished += 1
                break
        return item

    def get_nowait(self) -> T:
        """Take the next item if there is one; else raise `QueueEmpty` (`QueueClosed`
        if the queue is closed and drained)."""
        if self._size():
            return self._take()
        if self._closed:
            raise QueueClosed(f"get on {self!r}")
        raise QueueEmpty(f"get_nowait on {self!r}")

    @operation
    def get(self) -> Generator[Any, Any, T]:
        """Take the next item, waiting while the queue is empty (``x = yield q.get()``).

        Getters are served in arrival order. After `close`, the remaining items
        are still handed out; then `QueueClosed` is raised (also in every getter
        that was waiting). A getter killed or timed out while it waits has
        taken nothing: the item goes to the next getter.
        """
        if self._size():
            return self._take()
        if self._closed:
            raise QueueClosed(f"get on {self!r}")
        w: _Waiter[T] = _Waiter(self, "get")
        self._getters.append(w)
        try:
            yield wait_on(w)
        except BaseException:
            self._withdraw(self._getters, w)
            raise
        if w.state is _WaitState.CLOSED:
            raise QueueClosed(f"{self!r} closed while a get waited")
        assert w.state is _WaitState.HANDED, f"woken {w!r} in state {w.state}"
        return cast(T, w.item)  # handed by _hand_to_getter

    def _withdraw(self, waiters: deque[_Waiter[T]], w: _Waiter[T]) -> None:
        """A waiter leaves on an exception (kill, timeout, Deadlock...)."""
        if w.state is _WaitState.WAITING:
            try:
                waiters.remove(w)
            except ValueError:
                pass  # a waker popped it, found it leaving, and passed it over
        elif w.state is _WaitState.HANDED and w.kind == "get":
            # Discussion: cannot happen under the kernel's rules (a task handed an
            # item is READY, and READY tasks get cancellations at their next trap,
            # not at this yield). Should the kernel ever close a handed getter
            # (an emergency abort), do not lose its item: it is next out again.
            item, w.item = cast(T, w.item), None
            self._unfinished -= 1
            if not self._hand_to_getter(item):
                self._push_back(item)
                self._unfinished += 1

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
        for waiters in (self._getters, self._putters):
            while waiters:
                w = waiters.popleft()
                if wakeup(w, 1):
                    w.state = _WaitState.CLOSED

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
        self._stack: list[T] = []

    def _push(self, item: T) -> None:
        self._stack.append(item)

    def _pop(self) -> T:
        return self._stack.pop()

    def _push_back(self, item: T) -> None:
        self._stack.append(item)

    def _size(self) -> int:
        return len(self._stack)


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
        self._heap: list[Any] = []  # Any: T is not declared comparable; heapq checks at run time

    def _push(self, item: T) -> None:
        heapq.heappush(self._heap, item)

    def _pop(self) -> T:
        return cast(T, heapq.heappop(self._heap))

    def _push_back(self, item: T) -> None:
        heapq.heappush(self._heap, item)

    def _size(self) -> int:
        return len(self._heap)
