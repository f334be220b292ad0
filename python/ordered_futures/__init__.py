"""``concurrent.futures`` whose done-callbacks are ordered, exclusive and
exactly-once, on a lock-free Rust core (the ``concurrent-futures`` crate).

Change one import::

    from ordered_futures import ThreadPoolExecutor, wait, as_completed

The guarantee Python's documentation states and its implementation races
("called in the order that they were added"), made true: the callbacks of
one future run exactly once, in the order they were added, never two at a
time, even when one is added from another thread while the future
completes. ``ThreadPoolExecutor(serial_callbacks=True)`` goes further:
no two done-callbacks of any of its futures run at a time, so callbacks
may update shared state with no lock.

Our futures are ``concurrent.futures.Future`` instances and our executor a
``concurrent.futures.ThreadPoolExecutor`` instance, so code that checks for
the stdlib's types (``asyncio.wrap_future``, ``loop.run_in_executor``,
``concurrent.futures.wait``) accepts them. See docs/python.md for the
design and the differences from the stdlib.
"""

import collections as _collections
import concurrent.futures as _cf
import concurrent.futures.thread as _cf_thread
import itertools as _itertools
import os as _os
import threading as _threading
import time as _time
import weakref as _weakref

from . import _core

__all__ = [
    "ALL_COMPLETED",
    "BrokenExecutor",
    "BrokenThreadPool",
    "CancelledError",
    "Executor",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Future",
    "InvalidStateError",
    "ThreadPoolExecutor",
    "TimeoutError",
    "as_completed",
    "wait",
]

# The stdlib's own classes and constants, so existing ``except`` clauses
# and comparisons keep working.
CancelledError = _cf.CancelledError
TimeoutError = _cf.TimeoutError
BrokenExecutor = _cf.BrokenExecutor
BrokenThreadPool = _cf_thread.BrokenThreadPool
InvalidStateError = _cf.InvalidStateError
FIRST_COMPLETED = _cf.FIRST_COMPLETED
FIRST_EXCEPTION = _cf.FIRST_EXCEPTION
ALL_COMPLETED = _cf.ALL_COMPLETED
Executor = _cf.Executor

# Guards the lazy creation of the stdlib's private fields (rare path).
# Reentrant: a collection or a signal handler while it is held may touch
# another future's fields on the same thread.
_lazy = _threading.RLock()


def _notify_stdlib_waiters(future):
    """Wakes the stdlib's waiters (``concurrent.futures.wait`` and
    ``as_completed`` called on our futures), as the stdlib's completion
    does: under the future's condition, the state they read turns final
    and each waiter is told once, then ``notify_all``. Whoever comes first
    tells them: this callback, or a read of ``_state`` once the future is
    done (which does not wait for callbacks queued before this one, one
    of which may be the reader)."""
    with future._condition:
        if future.__dict__.get("_told"):
            return
        future.__dict__["_told"] = True
        if future.cancelled():
            for waiter in future._waiters:
                waiter.add_cancelled(future)
        elif future._exception is not None:
            for waiter in future._waiters:
                waiter.add_exception(future)
        else:
            for waiter in future._waiters:
                waiter.add_result(future)
        future._condition.notify_all()


def _tell_stdlib_waiters(future):
    """Attaches ``_notify_stdlib_waiters`` to ``future``, once."""
    fields = future.__dict__
    with _lazy:
        first = "_telling" not in fields
        fields["_telling"] = True
    if first:
        # Outside ``_lazy``: on a done future the callback runs here and
        # takes the condition, which another thread may hold while it
        # waits for ``_lazy``. A stdlib waiter installed before the future
        # is done is told by it, or by the first read of ``_state`` after.
        future._add_done_callback_unserialized(_notify_stdlib_waiters)


class Future(_core.Future, _cf.Future):
    """The result of a call, available later: a drop-in for
    ``concurrent.futures.Future`` (and an instance of it).

    Its state and callbacks live in the native core, so ``result`` and
    ``exception`` release the GIL while they wait and Ctrl-C interrupts
    them, and ``add_done_callback`` is one atomic operation: callbacks run
    exactly once, in the order they were added, never two at a time.

    Create one directly (``Future()``) to complete it yourself with
    ``set_result`` / ``set_exception``; ``ThreadPoolExecutor.submit``
    returns ones its executor completes.
    """

    def __init__(self):
        # The state lives in the native core: no Condition, no list.
        pass

    def __getattr__(self, name):
        # Only the stdlib's private ``_condition`` and ``_waiters`` are made
        # here, on first use (by the stdlib's own ``wait``/``as_completed``
        # or code that reads them): the fast paths never pay for them.
        if name not in ("_condition", "_waiters"):
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}"
            )
        fields = self.__dict__
        with _lazy:
            fields.setdefault("_waiters", [])
            fields.setdefault("_condition", _threading.Condition())
        _tell_stdlib_waiters(self)
        return fields[name]

    @property
    def _state(self):
        """The stdlib's state name, from the native state. Once the
        stdlib's private fields exist, a finished future reads ``FINISHED``
        only after its waiters were told (under ``_condition``), as in the
        stdlib, so the stdlib's ``wait`` never counts it twice."""
        state = _core.Future._state.__get__(self)
        fields = self.__dict__
        if "_condition" in fields:
            if "_telling" not in fields:
                # Assigned, not made by ``__getattr__`` (a subclass that
                # runs the stdlib's ``Future.__init__``): tell its waiters
                # all the same.
                _tell_stdlib_waiters(self)
            if (not fields.get("_told")
                    and state in (_cf._base.FINISHED, _cf._base.CANCELLED_AND_NOTIFIED)):
                # Done natively, its waiters not yet told: tell them now,
                # under the condition, so that the state turns final for
                # them and for this reader at once. (Waiting for the
                # notifier callback instead hung a stdlib ``wait`` on the
                # future from one of its own callbacks, queued before it.)
                _notify_stdlib_waiters(self)
        return state

    @_state.setter
    def _state(self, state):
        _core.Future._state.__set__(self, state)


class ThreadPoolExecutor(_core.Executor, _cf.ThreadPoolExecutor):
    """A drop-in for ``concurrent.futures.ThreadPoolExecutor`` (and an
    instance of it)::

        ThreadPoolExecutor(max_workers=None, thread_name_prefix='',
                           initializer=None, initargs=(), *,
                           serial_callbacks=False)

    ``max_workers`` threads (default ``min(32, os.cpu_count() + 4)``) are
    started at once and take the GIL only to run Python code.
    ``initializer(*initargs)`` runs once on each thread, before its first
    call; if it raises, the executor is broken: pending and later calls
    fail with ``BrokenThreadPool``.

    ``serial_callbacks=True`` runs every done-callback of this executor's
    futures one at a time (through a serial context, with no lock), so
    callbacks may update shared state safely (on a GIL build; a
    free-threaded one is designed for, not tested). Each runs as the
    stdlib's does, on the thread that completes its future (or adds it to
    a done one), unless another thread is running the executor's callbacks
    at that moment: then on that thread, after the ones before it. None is
    pool work, so a call may wait on what a callback does while every
    worker is busy.
    """

    def __init__(self, max_workers=None, thread_name_prefix="", initializer=None,
                 initargs=(), *, serial_callbacks=False):
        if not thread_name_prefix:
            # The stdlib's class-wide count, so that default names stay
            # unique across its executors and ours.
            thread_name_prefix = "ThreadPoolExecutor-%d" % self._counter()
        self._start(max_workers, thread_name_prefix, initializer, initargs,
                    serial_callbacks)

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Calls ``fn`` on the items of ``iterables`` taken in parallel and
        returns an iterator over the results, in order (see
        ``concurrent.futures.Executor.map``). All calls are queued at once,
        unless ``buffersize`` (Python 3.14's) bounds how many are queued
        ahead of the consumer. ``timeout`` counts from this call. An
        exception ends the iteration and cancels the calls not started, as
        does closing or dropping a started iterator. ``chunksize`` is
        ignored, as by the stdlib's thread pool. A subclass that overrides
        ``submit`` (on the class or on the instance, as a mock does) gets
        its calls through its ``submit``."""
        if (type(self).submit is not _core.Executor.submit
                or "submit" in getattr(self, "__dict__", ())):
            return _map_through_submit(self, fn, iterables, timeout, buffersize)
        return _core.Executor.map(self, fn, *iterables, timeout=timeout,
                                  chunksize=chunksize, buffersize=buffersize)


def _map_through_submit(executor, fn, iterables, timeout, buffersize):
    """``Executor.map`` (3.14, with ``buffersize``) over ``executor.submit``,
    for subclasses that override ``submit``."""
    if buffersize is not None:
        if not isinstance(buffersize, int):
            raise TypeError("buffersize must be an integer or None")
        if buffersize < 1:
            raise ValueError("buffersize must be None or > 0")
    if timeout is not None:
        end_time = timeout + _time.monotonic()
    zipped = zip(*iterables)
    if buffersize:
        fs = _collections.deque(executor.submit(fn, *args)
                               for args in _itertools.islice(zipped, buffersize))
    else:
        fs = [executor.submit(fn, *args) for args in zipped]
    executor_ref = _weakref.ref(executor)

    def result_iterator():
        try:
            fs.reverse()
            while fs:
                if buffersize and (ex := executor_ref()) and (args := next(zipped, None)):
                    fs.appendleft(ex.submit(fn, *args))
                # No name holds the future (nor its result) while the
                # generator is paused at the yield, as in the stdlib.
                if timeout is None:
                    yield _result_or_cancel(fs.pop())
                else:
                    yield _result_or_cancel(fs.pop(), end_time - _time.monotonic())
        finally:
            for f in fs:
                f.cancel()

    return result_iterator()


def _result_or_cancel(f, timeout=None):
    try:
        try:
            return f.result(timeout)
        finally:
            f.cancel()
    finally:
        del f  # the exception's traceback would hold it otherwise


def wait(fs, timeout=None, return_when=ALL_COMPLETED):
    """Waits until the futures ``fs`` meet ``return_when``
    (``FIRST_COMPLETED``, ``FIRST_EXCEPTION`` or ``ALL_COMPLETED``) or
    ``timeout`` seconds pass, and returns ``DoneAndNotDoneFutures(done,
    not_done)``, as ``concurrent.futures.wait``. Releases the GIL while it
    waits; Ctrl-C interrupts it. Futures of other kinds are handed to the
    stdlib's ``wait``."""
    return _core.wait(fs, timeout, return_when)


def as_completed(fs, timeout=None):
    """Returns an iterator over the distinct futures of ``fs``: those
    already done first, then each as it finishes, as
    ``concurrent.futures.as_completed``. Raises ``TimeoutError`` once
    ``timeout`` seconds (from the first ``next``) pass with futures
    unfinished. Futures of other kinds are handed to the stdlib's."""
    return _core.as_completed(fs, timeout)


_core._set_future_class(Future)
_core._set_main_thread(_threading.main_thread().ident)
# As the stdlib's pools: queued calls finish before the interpreter does.
_threading._register_atexit(_core._python_exit)
if hasattr(_os, "register_at_fork"):
    def _after_fork_in_child():
        _lazy._at_fork_reinit()  # a parent thread may have held it
        _core._after_fork_in_child(_threading.get_ident())

    _os.register_at_fork(after_in_child=_after_fork_in_child)
