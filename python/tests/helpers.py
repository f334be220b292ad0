"""Helpers shared by the test files (imported by name: pytest puts this
directory on the path, as it has no __init__.py)."""
import contextlib
import gc
import sys
import threading
import time
import weakref


class CallsOnAppend(list):
    """A future's `_waiters` that calls `fn(waiter)` when the stdlib's
    `wait` installs its waiter: with the futures' conditions held, after
    it read their states."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def append(self, waiter):
        super().append(waiter)
        self.fn(waiter)


@contextlib.contextmanager
def once_inside(name, action):
    """Around a block in the calling thread: another thread runs `action()`
    once the calling thread is inside the builtin call `name`, never before.
    A profile hook sees the call's "c_call" event, just before the call;
    `action` runs once the calling thread's innermost frame is the caller's
    again, past the hook: nothing but native code runs from there into the
    call, and the thread looking holds the GIL, so the call has started
    and let go of the GIL. `action` does not run if the block ends first."""
    caller_thread = threading.get_ident()
    entered, ended = threading.Event(), threading.Event()
    lock = threading.Lock()
    caller = []

    def hook(frame, event, arg):
        if event == "c_call" and not caller and getattr(arg, "__name__", None) == name:
            caller.append(frame)
            entered.set()

    def run():
        entered.wait()
        while caller and not ended.is_set() and sys._current_frames().get(caller_thread) is not caller[0]:
            pass  # the calling thread is still in the hook
        with lock:
            if not ended.is_set():
                action()

    t = threading.Thread(target=run)
    t.start()
    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        yield
    finally:
        sys.setprofile(previous)
        with lock:
            ended.set()
        entered.set()
        t.join()


def until_asleep(native_id):
    """Returns once the thread `native_id` (`threading.get_native_id()`)
    sleeps in the kernel (its state in /proc reads `S`) and has on every
    look for a millisecond: a thread blocked a moment on a lock on its way
    to the wait a test means reads `S` too. Linux only."""
    since = None
    while True:
        with open(f"/proc/self/task/{native_id}/stat") as stat:
            asleep = stat.read().rsplit(") ", 1)[1].startswith("S")
        if not asleep:
            since = None
        elif since is None:
            since = time.monotonic()
        elif time.monotonic() - since >= 0.001:
            return


def assert_each_freed(results):
    """Iterates `results` (a `map`'s), checking that once the loop lets go
    of each result nothing else holds it: the iterator keeps no reference
    to what it yielded."""
    for obj in results:
        ref = weakref.ref(obj)
        del obj
        gc.collect()
        assert ref() is None


def occupy(ex):
    """Occupies the only worker of `ex` with a call that waits on the
    returned gate, and returns once it runs, so what is submitted next
    queues: (that call, the gate)."""
    gate, started = threading.Event(), threading.Event()
    busy = ex.submit(lambda: (started.set(), gate.wait())[1])
    started.wait()
    return busy, gate
