"""The GIL and the interpreter: Ctrl-C, exit, fork, garbage collection,
memory, asyncio, and the stdlib's own functions on our futures."""
import asyncio
import concurrent.futures as cf
import contextlib
import gc
import os
import signal
import subprocess
import sys
import threading
import time
import weakref

import pytest

import ordered_futures as of
from helpers import CallsOnAppend, assert_each_freed, once_inside


needs_pthread_kill = pytest.mark.skipif(
    not hasattr(signal, "pthread_kill"), reason="needs signal.pthread_kill")


@contextlib.contextmanager
def sigint_once_main_calls(name, unblock):
    """SIGINT to the main thread once it is inside the builtin call `name`
    (see `once_inside`). If the block has not ended 10 s after the
    signal (the call ignored it), `unblock()` lets the call finish, so the
    test fails instead of hanging. Yields a dict that says whether the
    signal was sent and whether the block outlived those 10 s."""
    seen = {"sent": False, "hung": False}
    sent, ended = threading.Event(), threading.Event()

    def interrupt():
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        seen["sent"] = True
        sent.set()

    def watch():
        sent.wait()
        if not ended.wait(10):
            seen["hung"] = True
            unblock()

    w = threading.Thread(target=watch)
    w.start()
    try:
        with once_inside(name, interrupt):
            yield seen
    finally:
        ended.set()
        sent.set()
        w.join()


@needs_pthread_kill
@pytest.mark.parametrize("how", ["result", "exception", "wait", "as_completed", "map"])
def test_ctrl_c_interrupts_a_blocking_call(how):
    never = threading.Event()
    ex = of.ThreadPoolExecutor(1)
    f = ex.submit(never.wait)
    call = {"as_completed": "next", "map": "next"}.get(how, how)
    it = None
    if how == "as_completed":
        it = of.as_completed([f])
    elif how == "map":
        it = ex.map(lambda _: never.wait(), [1])
    with pytest.raises(KeyboardInterrupt):
        with sigint_once_main_calls(call, never.set) as seen:
            if how == "result":
                f.result()
            elif how == "exception":
                f.exception()
            elif how == "wait":
                of.wait([f])
            else:
                next(it)
    never.set()
    ex.shutdown()
    assert seen == {"sent": True, "hung": False}
    if it is not None:
        # The stdlib's generator is finished by the exception: nothing more
        # comes out, though everything has finished since.
        assert list(it) == []


@needs_pthread_kill
@pytest.mark.parametrize("how", ["map", "as_completed"])
def test_a_next_while_one_blocks_raises_the_generators_value_error(how):
    # A signal handler runs inside the main thread's blocked `next` (the
    # wait runs them); its own `next` (and `close`) meet the iteration
    # under way, and raise what a stdlib generator's would.
    gate = threading.Event()
    errors = []
    with of.ThreadPoolExecutor(1) as ex:
        f = ex.submit(gate.wait)
        it = ex.map(lambda _: gate.wait(), [1]) if how == "map" else of.as_completed([f])
        calls = [lambda: next(it)] + ([it.close] if hasattr(it, "close") else [])

        def handler(signum, frame):
            try:
                for call in calls:
                    try:
                        call()
                    except ValueError as e:
                        errors.append(str(e))
            finally:
                gate.set()

        def signal_main():
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

        previous = signal.signal(signal.SIGUSR1, handler)
        try:
            with once_inside("next", signal_main):
                got = next(it)
        finally:
            signal.signal(signal.SIGUSR1, previous)
    assert got is (True if how == "map" else f)
    assert errors == ["generator already executing"] * len(calls)


@needs_pthread_kill
def test_ctrl_c_interrupts_shutdown_wait_and_the_calls_still_finish():
    gate = threading.Event()
    ex = of.ThreadPoolExecutor(1)
    f = ex.submit(gate.wait)
    with pytest.raises(KeyboardInterrupt):
        with sigint_once_main_calls("shutdown", gate.set) as seen:
            ex.shutdown(wait=True)
    assert seen == {"sent": True, "hung": False}
    assert not f.done()  # the interrupted wait did not wait the call out
    gate.set()
    assert f.result() is True
    ex.shutdown(wait=True)


def run_python(code, timeout=60):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def test_exit_without_shutdown_runs_the_pending_calls():
    out = run_python(
        # One write per line: two threads' print() calls may interleave.
        "import sys, time, ordered_futures as of\n"
        "def out(line):\n"
        "    sys.stdout.write(f'{line}\\n')\n"
        "    sys.stdout.flush()\n"
        "ex = of.ThreadPoolExecutor(2)\n"
        "for i in range(200): ex.submit(lambda i=i: (time.sleep(0.001), out(i)))\n"
        "f = ex.submit(int)\n"
        "f.add_done_callback(lambda f: out('callback'))\n"
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert sorted(int(x) for x in lines if x.isdigit()) == list(range(200))
    assert "callback" in lines
    assert out.stderr == ""


def test_an_executor_dropped_without_shutdown_still_finishes_at_exit():
    out = run_python(
        "import time, ordered_futures as of\n"
        "def go():\n"
        "    ex = of.ThreadPoolExecutor(1)\n"
        "    for i in range(20): ex.submit(lambda i=i: (time.sleep(0.01), print(i, flush=True)))\n"
        "go()\n"
        "import gc; gc.collect()\n"
    )
    assert out.returncode == 0, out.stderr
    assert sorted(map(int, out.stdout.split())) == list(range(20))


def test_submit_during_interpreter_exit_is_refused():
    out = run_python(
        "import atexit, threading, ordered_futures as of\n"
        "ex = of.ThreadPoolExecutor(1)\n"
        "def late():\n"
        "    try:\n"
        "        ex.submit(int)\n"
        "    except RuntimeError as e:\n"
        "        print(e)\n"
        "atexit.register(late)\n"
    )
    assert out.returncode == 0, out.stderr
    assert "cannot schedule new futures after interpreter shutdown" in out.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_neither_crashes_nor_hangs():
    out = run_python(
        "import os, sys, warnings, ordered_futures as of\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "ex = of.ThreadPoolExecutor(2)\n"
        "import threading\n"
        "gate = threading.Event()\n"
        "pending = ex.submit(gate.wait)\n"
        "assert ex.submit(pow, 2, 5).result() == 32\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n"
        "        ex.submit(int)\n"
        "    except of.BrokenThreadPool as e:\n"
        "        print('child refused:', e, flush=True)\n"
        "    with of.ThreadPoolExecutor(2) as fresh:\n"
        "        print('child fresh pool:', fresh.submit(pow, 3, 2).result(), flush=True)\n"
        "    threads = ex._threads\n"
        "    for t in threads:\n"
        "        t.join()\n"
        "    print('child threads alive:', [t.is_alive() for t in threads], flush=True)\n"
        "    ex.shutdown()\n"
        "    sys.exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('child status', os.waitstatus_to_exitcode(status), flush=True)\n"
        "print('pending at fork', not pending.done(), flush=True)\n"
        "gate.set()\n"
        "print('parent', pending.result(), flush=True)\n",
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "child refused: this executor was created before os.fork()" in out.stdout
    assert "child fresh pool: 9" in out.stdout
    # The parent's threads, read in the child: stopped, as the stdlib's.
    assert "child threads alive: [False, False]" in out.stdout
    assert "child status 0" in out.stdout
    assert "pending at fork True" in out.stdout
    assert "parent True" in out.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_serial_callback_of_a_call_cancelled_in_a_forked_child_runs_there():
    # As the stdlib's: the thread that completes the future runs its
    # callbacks, here the child's only thread (the serial context's idle
    # at the fork, so the child takes it).
    out = run_python(
        "import os, sys, warnings, threading, ordered_futures as of\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "ex = of.ThreadPoolExecutor(1, serial_callbacks=True)\n"
        "gate = threading.Event()\n"
        "busy = ex.submit(gate.wait)\n"
        "queued = ex.submit(pow, 2, 3)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    queued.add_done_callback(lambda f: print('child callback', f.cancelled(), flush=True))\n"
        "    print('child cancel', queued.cancel(), flush=True)\n"
        "    ex.shutdown()\n"
        "    sys.exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('child status', os.waitstatus_to_exitcode(status), flush=True)\n"
        "gate.set()\n"
        "print('parent', busy.result(), queued.result(), flush=True)\n"
        "ex.shutdown()\n",
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "child callback True\nchild cancel True" in out.stdout
    assert "child status 0" in out.stdout
    assert "parent True 8" in out.stdout


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_by_a_call_runs_none_of_the_parents_calls():
    # The child goes on as the worker that forked it. Its waits there must
    # not start a stand-in worker for the parent's pool, which would run the
    # parent's queued calls a second time, in the child.
    out = run_python(
        "import os, warnings, ordered_futures as of\n"
        "warnings.simplefilter('ignore', DeprecationWarning)\n"
        "def job(tag):\n"
        "    os.write(1, f'{tag} ran in {os.getpid()}\\n'.encode())\n"
        "def forker():\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        with of.ThreadPoolExecutor(1) as fresh:\n"
        "            fresh.submit(int).result()\n"
        "        os.write(1, b'child done\\n')\n"
        "        os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
        "print('parent', os.getpid(), flush=True)\n"
        "ex = of.ThreadPoolExecutor(1)\n"
        "ex.submit(forker)\n"
        "for i in range(2):\n"
        "    ex.submit(job, f'queued-{i}')\n"
        "ex.shutdown()\n",
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    parent = lines[0].split()[1]
    assert "child done" in lines
    assert sorted(l for l in lines if "ran in" in l) == [
        f"queued-0 ran in {parent}", f"queued-1 ran in {parent}"]


def collected(make):
    ref = make()
    gc.collect()
    return ref() is None


def test_reference_cycles_through_results_and_exceptions_are_collected():
    def result_cycle():
        f = of.Future()
        f.set_result([f])
        return weakref.ref(f)

    def exception_cycle():
        with of.ThreadPoolExecutor(1) as ex:
            def fail():
                raise ValueError
            f = ex.submit(fail)
            e = f.exception()
            e.future = f
            return weakref.ref(f)

    def traceback_cycle():
        with of.ThreadPoolExecutor(1) as ex:
            f = ex.submit(lambda: 1 / 0)
            try:
                f.result()
            except ZeroDivisionError as e:
                err = e  # the traceback's frame holds `f`
            return weakref.ref(f)

    def callback_cycle():
        f = of.Future()
        f.add_done_callback(lambda _: f)
        f.set_result(None)
        return weakref.ref(f)

    def staged_cycle():
        f = of.Future()
        f._result = [f]  # kept until `_state = FINISHED`
        return weakref.ref(f)

    def task_cycle():
        with of.ThreadPoolExecutor(1) as ex:
            box = []
            f = ex.submit(lambda: box)
            box.append(f)
            f.result()
            return weakref.ref(f)

    for make in (result_cycle, exception_cycle, traceback_cycle, callback_cycle,
                 staged_cycle, task_cycle):
        assert collected(make), make.__name__


def thread_count():
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs /proc")
def test_an_executor_in_a_cycle_through_its_initializer_is_collected():
    # The initializer, a method of an object that holds the executor, is a
    # cycle through the executor's native half: collected, and its
    # threads end, whether it never ran a call or its calls are done.
    class Service:
        def __init__(self):
            self.ex = of.ThreadPoolExecutor(2, initializer=self.setup)

        def setup(self):
            pass

    def unused():
        return weakref.ref(Service())

    def used():
        s = Service()
        assert s.ex.submit(int, "7").result() == 7
        s.ex.shutdown(wait=True)  # so no call still holds its state
        return weakref.ref(s)

    before = thread_count()
    assert collected(unused)
    deadline = time.monotonic() + 30
    while thread_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert thread_count() <= before, "the unused executor's threads ended"
    assert collected(used)

    # While a call is queued or running, a worker may still need the
    # initializer: the executor does not claim it, and the cycle lives
    # until the call is done.
    gate = threading.Event()
    s = Service()
    f = s.ex.submit(gate.wait)
    ref = weakref.ref(s)
    del s
    gc.collect()
    assert ref() is not None, "collected while its call was pending"
    gate.set()
    assert f.result() is True
    deadline = time.monotonic() + 30
    while ref() is not None and time.monotonic() < deadline:
        time.sleep(0.001)  # the call's hold goes just after its future completes
        gc.collect()
    assert ref() is None


def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_a_million_submits_keep_memory_flat():
    with of.ThreadPoolExecutor(2) as ex:
        for _ in range(100_000):
            ex.submit(int).result()
        gc.collect()
        before = rss_kib()
        for i in range(1_000_000):
            f = ex.submit(int, i)
            if i % 1000 == 0:
                f.result()
        f.result()
        gc.collect()
        after = rss_kib()
    assert after - before < 16 * 1024, (before, after)


def test_asyncio_interop():
    with of.ThreadPoolExecutor(2) as ex:
        async def main():
            loop = asyncio.get_running_loop()
            a = await loop.run_in_executor(ex, sum, [1, 2, 3])
            b = await asyncio.wrap_future(ex.submit(len, "abcd"))
            loop.set_default_executor(ex)
            c = await loop.run_in_executor(None, pow, 2, 3)
            d = await asyncio.to_thread(abs, -4)
            with pytest.raises(ZeroDivisionError):
                await loop.run_in_executor(ex, lambda: 1 / 0)
            with of.ThreadPoolExecutor(1) as one:
                gate = threading.Event()
                slow = asyncio.wrap_future(one.submit(gate.wait))
                queued = one.submit(int)  # behind `slow` on the one worker
                mirror = asyncio.wrap_future(queued)
                mirror.cancel()
                await asyncio.sleep(0)
                gate.set()
                await slow
            return a, b, c, d, queued.cancelled()
        assert asyncio.run(main()) == (6, 4, 8, 4, True)


def test_the_stdlib_wait_and_as_completed_accept_our_futures():
    gate = threading.Event()
    with of.ThreadPoolExecutor(2) as ex:
        fs = [ex.submit(pow, 2, i) for i in range(50)]
        done, not_done = cf.wait(fs)
        assert done == set(fs) and not not_done
        slow = ex.submit(gate.wait)
        done, not_done = cf.wait(fs + [slow], timeout=0.05)
        assert set(fs) <= done and not_done == {slow}
        # `slow` finishes once the stdlib's wait has read its state and
        # installed its waiter: the wait must learn it from the waiter.
        slow._waiters  # made on first use
        slow.__dict__["_waiters"] = CallsOnAppend(lambda waiter: gate.set())
        done, not_done = cf.wait([slow], return_when=cf.FIRST_COMPLETED)
        assert done == {slow} and not not_done
        assert sorted(f.result() for f in cf.as_completed(fs)) == [2**i for i in range(50)]


def test_our_wait_hands_foreign_futures_to_the_stdlib():
    theirs = cf.Future()
    theirs.set_result(1)
    ours = of.Future()
    ours.set_result(2)
    done, not_done = of.wait([theirs, ours])
    assert done == {theirs, ours} and not not_done
    assert set(of.as_completed([theirs, ours])) == {theirs, ours}


def test_blocking_calls_release_the_gil():
    # The call result() waits for ends only once another thread has run
    # Python code while the main thread was inside result(), which it can
    # do only if result() let go of the GIL. Kept, result() times out.
    inside = threading.Event()
    with of.ThreadPoolExecutor(1) as ex:
        f = ex.submit(inside.wait, 60)
        with once_inside("result", inside.set):
            assert f.result(timeout=10) is True


class Payload:
    pass


@contextlib.contextmanager
def nothing_enters_the_package():
    """Around the end of a test that checks a drop a worker made without
    the GIL: any call into the package would apply PyO3's pending drops and
    hide a drop left there, and so would a garbage collection that freed
    some leftover object of the package's; the body makes no such call, and
    the collector is off."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("serial", [False, True])
def test_a_result_is_freed_when_a_worker_lets_go_of_it_last(serial):
    # The worker that ran a call holds the call's future until the future's
    # done-callbacks have run (with serial callbacks, the serial context's
    # job holds it). Here a callback holds it there while the caller takes
    # the result and drops every reference it has, so the worker's
    # reference is the last one: the result must be freed then, not at
    # some later time the interpreter is entered from native code.
    start, go, freed = threading.Event(), threading.Event(), threading.Event()
    with of.ThreadPoolExecutor(1, serial_callbacks=serial) as ex:
        f = ex.submit(lambda: start.wait(10) and Payload())
        f.add_done_callback(lambda _: go.wait(10))
        start.set()
        result = f.result(timeout=10)
        assert isinstance(result, Payload)
        ref = weakref.ref(result, lambda _: freed.set())
        with nothing_enters_the_package():
            del result, f
            go.set()
            assert freed.wait(10), "the result outlived every reference to it"
        assert ref() is None


def test_map_keeps_no_reference_to_a_result_it_yielded():
    # CPython's test_free_reference, many times over. A stress test, not a
    # guard that fails every time: the race it found (the worker dropping
    # the call's future after the iterator did) opens for a moment per
    # `map`. The tests around it make the worker last every time.
    with of.ThreadPoolExecutor(2) as ex:
        for _ in range(200):
            assert_each_freed(ex.map(lambda _: Payload(), range(10)))


def test_an_initializer_is_freed_when_a_worker_lets_go_of_it_last():
    # A running call keeps the executor's shared state (the initializer
    # with it) after the executor itself is dropped; the worker then lets
    # go of it last, without the GIL, and must still free it at once.
    class Init:
        def __call__(self):
            pass

    go, freed = threading.Event(), threading.Event()
    init = Init()
    ref = weakref.ref(init, lambda _: freed.set())
    ex = of.ThreadPoolExecutor(1, initializer=init)
    del init
    ex.submit(go.wait, 10)
    with nothing_enters_the_package():
        del ex  # no shutdown: the queued call still runs
        go.set()
        assert freed.wait(10), "the initializer outlived the executor and its calls"
    assert ref() is None


def test_a_cancelled_calls_arguments_are_freed_when_a_worker_drops_it():
    # A cancelled call stays in the queue until a worker pops it, as with
    # the stdlib; the worker then drops it, without the GIL, and must free
    # its arguments at once.
    gate, freed = threading.Event(), threading.Event()
    ex = of.ThreadPoolExecutor(1)
    busy = ex.submit(gate.wait, 10)
    arg = Payload()
    ref = weakref.ref(arg, lambda _: freed.set())
    queued = ex.submit(id, arg)
    del arg
    assert queued.cancel()
    with nothing_enters_the_package():
        del busy, queued
        gate.set()
        assert freed.wait(10), "a cancelled call's argument outlived it"
    assert ref() is None
    ex.shutdown()


def test_a_future_dropped_pending_is_freed_with_its_callbacks():
    # Nobody can complete a `Future()` once it is dropped, so its callbacks
    # will never run: the future and what they hold are freed, as with the
    # stdlib, though the callback list is native (a strong reference from
    # it to the future would be a cycle the collector cannot see).
    held = Payload()
    held_ref = weakref.ref(held)
    ran = []
    f = of.Future()
    f.add_done_callback(lambda future, held=held: ran.append(future))
    f._condition  # the stdlib mirror adds a callback of its own
    future_ref = weakref.ref(f)
    del f, held
    gc.collect()
    assert future_ref() is None
    assert held_ref() is None
    assert ran == []  # never called with a future being freed


def test_a_result_a_worker_drops_during_the_exit_hooks_wait_is_freed_then():
    # The exit hook waits for the pools' calls; one finishing then, whose
    # future nobody holds, is dropped by its worker, and its result must be
    # freed before the interpreter finalizes (before `atexit` callbacks).
    # Such a drop takes the GIL; left pending instead, it would be applied
    # when the hook's sliced wait re-entered the interpreter, so this checks
    # the order a program sees rather than which of the two freed it.
    code = """
import atexit, time
import ordered_futures as of
class P:
    def __del__(self):
        print("freed", flush=True)
atexit.register(lambda: print("atexit", flush=True))
ex = of.ThreadPoolExecutor(1)
def call():
    while True:  # until the exit hook refuses new work
        try:
            ex.submit(int)
        except RuntimeError:
            return P()
        time.sleep(0.001)
ex.submit(call)
print("main done", flush=True)
"""
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["main", "done", "freed", "atexit"], out.stdout
