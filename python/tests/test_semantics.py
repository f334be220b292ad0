"""Python's rules for futures and executors, as concurrent.futures has
them (3.11), on our types."""
import concurrent.futures as cf
import concurrent.futures.thread
import os
import threading
import time

import pytest

import ordered_futures as of
from helpers import CallsOnAppend, assert_each_freed, occupy, once_inside, until_asleep


def test_the_stdlib_names_are_the_stdlib_objects():
    assert of.CancelledError is cf.CancelledError
    assert of.TimeoutError is cf.TimeoutError
    assert of.BrokenExecutor is cf.BrokenExecutor
    assert of.BrokenThreadPool is cf.thread.BrokenThreadPool
    assert of.InvalidStateError is cf.InvalidStateError
    assert (of.FIRST_COMPLETED, of.FIRST_EXCEPTION, of.ALL_COMPLETED) == (
        cf.FIRST_COMPLETED, cf.FIRST_EXCEPTION, cf.ALL_COMPLETED)


def test_ours_are_instances_of_the_stdlib_types():
    with of.ThreadPoolExecutor(1) as ex:
        assert isinstance(ex, cf.ThreadPoolExecutor) and isinstance(ex, cf.Executor)
        f = ex.submit(int)
        assert isinstance(f, cf.Future) and isinstance(of.Future(), cf.Future)


def test_submit_passes_args_and_kwargs_and_fn_is_positional_only():
    with of.ThreadPoolExecutor(2) as ex:
        assert ex.submit(pow, 2, 8).result() == 256
        assert ex.submit(int, "ff", base=16).result() == 255
        assert ex.submit(lambda fn: fn, fn=3).result() == 3


def test_cancel_rules():
    f = of.Future()
    assert not f.done() and not f.running() and not f.cancelled()
    assert f.cancel() and f.cancel() and f.cancelled() and f.done()
    with pytest.raises(cf.CancelledError):
        f.result()
    with pytest.raises(cf.CancelledError):
        f.exception()
    assert f.set_running_or_notify_cancel() is False
    with pytest.raises(cf.InvalidStateError):
        f.set_result(1)
    g = of.Future()
    assert g.set_running_or_notify_cancel() is True
    assert g.running() and not g.cancel()
    with pytest.raises(RuntimeError):
        g.set_running_or_notify_cancel()
    g.set_result(3)
    assert not g.cancel() and g.result() == 3 and g.exception() is None
    with pytest.raises(cf.InvalidStateError):
        g.set_result(4)
    with pytest.raises(cf.InvalidStateError):
        g.set_exception(ValueError())


def test_a_running_task_cannot_be_cancelled_a_queued_one_can():
    gate, started = threading.Event(), threading.Event()
    with of.ThreadPoolExecutor(1) as ex:
        running = ex.submit(lambda: (started.set(), gate.wait()))
        started.wait()
        queued = ex.submit(int)
        assert running.running() and not running.cancel()
        assert queued.cancel() and queued.cancelled()
        gate.set()
    assert running.result() == (None, True)


def test_timeouts():
    f = of.Future()
    t0 = time.monotonic()
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=0.05)
    # It waited out its timeout (up to the clock's resolution).
    assert time.monotonic() - t0 >= 0.05 - time.get_clock_info("monotonic").resolution
    with pytest.raises(cf.TimeoutError):
        f.exception(timeout=0)
    with pytest.raises(cf.TimeoutError):
        f.result(timeout=-1)
    done, not_done = of.wait([f], timeout=0.01)
    assert not done and not_done == {f}
    with pytest.raises(cf.TimeoutError, match=r"1 \(of 1\) futures unfinished"):
        list(of.as_completed([f], timeout=0.01))


def test_set_exception_and_result_of_own_futures():
    f = of.Future()
    e = ValueError("boom")
    f.set_exception(e)
    assert f.exception() is e
    with pytest.raises(ValueError, match="boom"):
        f.result()
    assert "raised ValueError" in repr(f)


def test_base_exceptions_go_on_the_future():
    with of.ThreadPoolExecutor(1) as ex:
        assert isinstance(ex.submit(exit, 3).exception(), SystemExit)
        def interrupt():
            raise KeyboardInterrupt
        assert isinstance(ex.submit(interrupt).exception(), KeyboardInterrupt)
        assert ex.submit(int).result() == 0  # the worker lives on


def test_shutdown_cancel_futures_cancels_only_queued_calls():
    gate, started = threading.Event(), threading.Event()
    ex = of.ThreadPoolExecutor(1)
    first = ex.submit(lambda: (started.set(), gate.wait(), "ran")[2])
    started.wait()
    queued = [ex.submit(int) for _ in range(5)]
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(q.cancelled() for q in queued)
    gate.set()
    ex.shutdown(wait=True)
    assert first.result() == "ran"


def test_shutdown_wait_runs_queued_calls_first():
    ex = of.ThreadPoolExecutor(2)
    fs = [ex.submit(time.sleep, 0.001) for _ in range(50)]
    ex.shutdown(wait=True)
    assert all(f.done() and not f.cancelled() for f in fs)


def test_an_executor_used_after_shutdown_raises_runtime_error():
    ex = of.ThreadPoolExecutor(1)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(int)
    with pytest.raises(RuntimeError):
        ex.map(abs, [1])
    with of.ThreadPoolExecutor(1) as ex2:
        pass
    with pytest.raises(RuntimeError):
        ex2.submit(int)
    ex.shutdown()  # a second shutdown is harmless


def test_constructor_checks_like_the_stdlib():
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        of.ThreadPoolExecutor(0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        of.ThreadPoolExecutor(1, initializer=3)
    ex = of.ThreadPoolExecutor()
    # As the package counts (the stdlib's formula): the CPUs this process
    # may use where Python tells them (3.13+), else all of them.
    cpus = getattr(os, "process_cpu_count", os.cpu_count)()
    assert ex._max_workers == min(32, (cpus or 1) + 4)
    ex.shutdown()
    # Past a machine word is past the pool's limit: a ValueError, not an
    # OverflowError.
    with pytest.raises(ValueError, match="a pool has at most 32767"):
        of.ThreadPoolExecutor(2**64)
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        of.ThreadPoolExecutor(-2**64)


def test_thread_names_follow_the_stdlib():
    with of.ThreadPoolExecutor(2, thread_name_prefix="Worker") as ex:
        name = ex.submit(lambda: threading.current_thread().name).result()
    assert name in ("Worker_0", "Worker_1")
    with of.ThreadPoolExecutor(1) as ex:
        name = ex.submit(lambda: threading.current_thread().name).result()
    assert name.startswith("ThreadPoolExecutor-") and name.endswith("_0")


def test_thread_name_prefix_takes_what_the_stdlib_takes():
    # `thread_name_prefix or "ThreadPoolExecutor-%d"`, then "%s_%d": None
    # and "" take a number, anything else is named by str().
    def name_of(prefix):
        with of.ThreadPoolExecutor(1, thread_name_prefix=prefix) as ex:
            return ex.submit(lambda: threading.current_thread().name).result()

    assert name_of(7) == "7_0"
    first, second = name_of(None), name_of("")
    assert first.startswith("ThreadPoolExecutor-") and second.startswith("ThreadPoolExecutor-")
    # A named executor takes no number: the unnamed ones are consecutive.
    number = lambda name: int(name[len("ThreadPoolExecutor-"):].split("_")[0])
    name_of("named")
    third = name_of(None)
    assert number(second) == number(first) + 1 and number(third) == number(second) + 1


def test_max_workers_bounds_the_calls_running_at_once():
    # A call blocked in result() keeps its thread: no stand-in thread runs
    # the next call meanwhile (the stdlib's bound, which programs use to
    # serialise calls with max_workers=1).
    gate, first_waits, second_started = of.Future(), threading.Event(), threading.Event()
    overlapped = []

    def first():
        first_waits.set()
        return gate.result(timeout=60)

    def second():
        overlapped.append(not gate.done())
        second_started.set()

    with of.ThreadPoolExecutor(1) as ex:
        a, b = ex.submit(first), ex.submit(second)
        assert first_waits.wait(timeout=60)
        # A stand-in would start `second` at once; 0.5 s bounds the look.
        assert not second_started.wait(timeout=0.5)
        gate.set_result(1)
        assert a.result(timeout=60) == 1 and b.result(timeout=60) is None
    assert overlapped == [False]
    assert threading.active_count() < 50


def _submitted_in_order(**kw):
    """One worker: A runs, B is submitted from outside, then A submits C,
    which waits on a future B sets. Returns the run order and C's result."""
    order, gate, box = [], threading.Event(), []
    flag = of.Future()
    with of.ThreadPoolExecutor(1, **kw) as ex:
        def a():
            order.append("A")
            gate.wait(timeout=60)
            box.append(ex.submit(lambda: (order.append("C"), flag.result(timeout=60))[1]))
        first = ex.submit(a)
        ex.submit(lambda: (order.append("B"), flag.set_result(1)))
        gate.set()
        first.result(timeout=60)
        return order, box[0].result(timeout=60)


def test_calls_start_in_the_order_they_were_submitted():
    # The stdlib's executor has one queue: C, submitted from a worker after
    # B was submitted from outside, starts after B. A call that overtook B
    # would wait on it with no worker to run it (no stand-ins).
    assert _submitted_in_order() == (["A", "B", "C"], 1)


def test_a_call_waiting_on_a_serial_callback_of_an_earlier_call_gets_it():
    # The serial context's job runs on the pool: it must not queue behind a
    # call waiting for what it sets (the stdlib runs the callback inline).
    flag, box, gate = of.Future(), [], threading.Event()
    with of.ThreadPoolExecutor(1, serial_callbacks=True) as ex:
        def a():
            gate.wait(timeout=60)
            box.append(ex.submit(flag.result, 60))
        first = ex.submit(a)
        first.add_done_callback(lambda f: flag.set_result(1))
        gate.set()
        first.result(timeout=60)
        assert box[0].result(timeout=60) == 1


def test_a_serial_callback_that_every_busy_worker_waits_on_still_runs():
    # As the stdlib runs a callback on the thread that completes the
    # future: here the main thread cancels a queued call while both workers
    # wait on what that call's callback sets. Run as pool work, the
    # callback would need a free worker, and there is none.
    release = threading.Event()
    both_waiting = threading.Barrier(3)

    def blocked():
        both_waiting.wait(timeout=60)
        return release.wait(timeout=30)

    with of.ThreadPoolExecutor(2, serial_callbacks=True) as ex:
        calls = [ex.submit(blocked) for _ in range(2)]
        both_waiting.wait(timeout=60)
        queued = ex.submit(int)
        queued.add_done_callback(lambda f: release.set())
        assert queued.cancel()
        assert [c.result(timeout=60) for c in calls] == [True, True]


def test_a_serial_callback_added_to_a_done_future_runs_inside_the_add():
    # The stdlib's rule, kept with serial_callbacks: the serial context is
    # idle, so the adding thread runs the callback before the add returns.
    # The future is one this thread completed (a cancel), so no worker is
    # still running its callbacks (a late add would join that run).
    gate = threading.Event()
    with of.ThreadPoolExecutor(1, serial_callbacks=True) as ex:
        busy = ex.submit(gate.wait, 60)
        f = ex.submit(int)
        assert f.cancel()
        ran = []
        f.add_done_callback(lambda f: ran.append(threading.current_thread()))
        assert ran == [threading.current_thread()]
        gate.set()
        assert busy.result(timeout=60)


def test_a_shutdown_that_a_waiting_call_of_the_executor_waits_on_returns():
    # A call of `a` waits on a call of `b`, which shuts `a` down with
    # wait=True: that wait would wait on the call waiting on it (the
    # stdlib hangs here). Whichever comes first, it ends: the shutdown
    # returns without waiting, or sees the cycle at its next slice.
    a, b = of.ThreadPoolExecutor(1), of.ThreadPoolExecutor(1)
    try:
        def inner():
            a.shutdown(wait=True)
            return "shut"

        def outer():
            return b.submit(inner).result()

        assert a.submit(outer).result(timeout=30) == "shut"
    finally:
        a.shutdown(wait=True)
        b.shutdown(wait=True)


def test_threading_trace_and_profile_hooks_reach_the_workers():
    # As a stdlib worker installs them when it starts: coverage.py and
    # profilers see the calls the workers run.
    traced, profiled = [], []

    def tracer(frame, event, arg):
        if event == "call":
            traced.append(frame.f_code.co_name)

    def profiler(frame, event, arg):
        if event == "call":
            profiled.append(frame.f_code.co_name)

    def work_seen_by_hooks():
        return 1

    threading.settrace(tracer)
    threading.setprofile(profiler)
    try:
        with of.ThreadPoolExecutor(2) as ex:
            assert ex.submit(work_seen_by_hooks).result() == 1
    finally:
        threading.settrace(None)
        threading.setprofile(None)
    assert "work_seen_by_hooks" in traced and "work_seen_by_hooks" in profiled


def test_initializer_runs_once_per_thread_and_thread_locals_persist():
    local = threading.local()
    inits = []

    def init(tag):
        inits.append(tag)
        local.conn = object()

    with of.ThreadPoolExecutor(2, initializer=init, initargs=("db",)) as ex:
        conns = {ex.submit(lambda: (threading.get_ident(), id(local.conn))).result() for _ in range(200)}
    # one connection per thread, kept across that thread's tasks
    assert len({ident for ident, _ in conns}) == len(conns) <= 2
    assert inits == ["db"] * len(inits) and 1 <= len(inits) <= 2


def test_a_failing_initializer_breaks_the_executor():
    def bad():
        raise ValueError("no database")

    ex = of.ThreadPoolExecutor(1, initializer=bad)
    f = ex.submit(int)
    with pytest.raises(of.BrokenThreadPool):
        f.result()
    with pytest.raises(of.BrokenThreadPool):
        ex.submit(int)
    ex.shutdown()


def test_map_yields_in_order_and_takes_several_iterables():
    with of.ThreadPoolExecutor(4) as ex:
        assert list(ex.map(pow, range(50), [2] * 50)) == [i * i for i in range(50)]
        assert list(ex.map(abs, [])) == []


def test_map_queues_every_call_before_iteration():
    done = []
    with of.ThreadPoolExecutor(2) as ex:
        ex.map(done.append, range(20))
    assert sorted(done) == list(range(20))


def test_map_stops_at_the_first_exception_and_cancels_the_rest():
    later = threading.Event()
    ran = []

    def f(i):
        if i == 0:
            raise ValueError(i)
        later.wait()  # the worker holds call 1 until the error was seen
        ran.append(i)

    with of.ThreadPoolExecutor(1) as ex:
        it = ex.map(f, range(10))
        with pytest.raises(ValueError):
            next(it)
        with pytest.raises(StopIteration):
            next(it)
        later.set()
    # call 1 may have started before the error was seen; 2..9 never run
    assert ran in ([], [1])


def test_map_timeout_counts_from_the_call():
    # Past the timeout by the first `next`, the first call finishes once
    # that `next` waits (if it does): a timeout counted from each `next`
    # would return its result; counted from the call, it is already over.
    gate = threading.Event()
    with of.ThreadPoolExecutor(1) as ex:
        it = ex.map(lambda _: gate.wait(), range(3), timeout=0.05)
        time.sleep(0.1)  # the timeout is what is tested: let it pass
        try:
            with pytest.raises(cf.TimeoutError):
                with once_inside("next", gate.set):
                    next(it)
        finally:
            gate.set()


def test_map_buffersize_bounds_the_inputs_taken_ahead_of_the_consumer():
    # As the stdlib's (3.14): `buffersize` inputs are taken (and their calls
    # queued) at once, then one more each time a result is asked for, and
    # no more: not when calls finish, only when the consumer asks.
    n, size = 20, 3
    taken = []
    gate = threading.Event()

    def inputs():
        for i in range(n):
            taken.append(i)
            yield i

    def f(i):
        assert gate.wait(60)
        return i

    with of.ThreadPoolExecutor(1) as ex:
        try:
            it = ex.map(f, inputs(), buffersize=size)
            assert len(taken) == size  # the calls block: none has finished
        finally:
            gate.set()
        # One worker, one queue: this runs after the buffered calls finished.
        assert ex.submit(int).result(timeout=60) == 0
        assert len(taken) == size
        for k in range(n):
            assert next(it) == k
            assert len(taken) == min(n, size + k + 1)
        with pytest.raises(StopIteration):
            next(it)
    with of.ThreadPoolExecutor(1) as ex:
        with pytest.raises(ValueError):
            ex.map(abs, [1], buffersize=0)
        with pytest.raises(TypeError):
            ex.map(abs, [1], buffersize=1.5)


def test_wait_return_conditions():
    gate = threading.Event()
    with of.ThreadPoolExecutor(2) as ex:
        slow = ex.submit(gate.wait)
        fast = ex.submit(int)
        failed = ex.submit(lambda: 1 / 0)
        done, not_done = of.wait([slow, fast], return_when=of.FIRST_COMPLETED)
        assert fast in done and slow in not_done
        done, not_done = of.wait([slow, failed], return_when=of.FIRST_EXCEPTION)
        assert done == {failed} and not_done == {slow}
        gate.set()
        done, not_done = of.wait([slow, fast, failed, fast])
        assert done == {slow, fast, failed} and not not_done
        # As the stdlib's: a bad condition is refused once there is
        # something to wait for, with its message.
        assert of.wait([fast], return_when="SOMETIMES").done == {fast}
        pending = of.Future()
        with pytest.raises(ValueError, match=r"^Invalid return condition: 'SOMETIMES'$"):
            of.wait([fast, pending], return_when="SOMETIMES")
        with pytest.raises(ValueError, match=r"^Invalid return condition: 3$"):
            of.wait([pending], timeout=0, return_when=3)
        with pytest.raises(ValueError, match=r"^Invalid return condition: None$"):
            of.wait([pending], timeout=0, return_when=None)


def test_as_completed_yields_done_first_then_in_completion_order():
    gates = [threading.Event() for _ in range(3)]
    with of.ThreadPoolExecutor(3) as ex:
        already = of.Future()
        already.set_result("x")
        fs = [ex.submit(g.wait) for g in gates]
        it = of.as_completed(fs + [already, already])
        assert next(it) is already
        for i in (2, 0, 1):
            gates[i].set()
            assert next(it) is fs[i]
        with pytest.raises(StopIteration):
            next(it)


def test_repr_matches_the_stdlib():
    f = of.Future()
    assert repr(f) == f"<Future at {id(f):#x} state=pending>"
    f.set_result(3)
    assert repr(f) == f"<Future at {id(f):#x} state=finished returned int>"


def test_private_fields_read_like_the_stdlib():
    f = of.Future()
    assert f._state == "PENDING"
    f.set_running_or_notify_cancel()
    assert f._state == "RUNNING"
    f.set_result(5)
    assert (f._state, f._result, f._exception) == ("FINISHED", 5, None)
    g = of.Future()
    g.cancel()
    assert g._state == "CANCELLED_AND_NOTIFIED"


def test_private_fields_written_in_either_order_complete_a_future():
    # Written first, kept until `_state = FINISHED` completes with them.
    seen = []
    f = of.Future()
    f.add_done_callback(lambda fut: seen.append(fut.result()))
    f._result = 42
    assert (f._result, f.done(), seen) == (42, False, [])
    f._state = "FINISHED"
    assert (f.result(), seen) == (42, [42])
    # The exception wins, as the stdlib's `result()` looks at it first.
    e = ValueError("x")
    g = of.Future()
    g._result, g._exception = 1, e
    g._state = "FINISHED"
    assert g.exception() is e
    # Written after, as CPython's tests do: they replace None.
    h = of.Future()
    h._state = "FINISHED"
    h._result = 7
    assert h.result() == 7
    # A task's future is its executor's to complete: ignored while pending.
    gate = threading.Event()
    with of.ThreadPoolExecutor(1) as ex:
        t = ex.submit(gate.wait)
        try:
            t._result = 5
            assert t._result is None
        finally:
            gate.set()
        assert t.result() is True


def test_a_subclass_with_its_own_init_works():
    class Tagged(of.Future):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

    t = Tagged("x")
    t.set_result(1)
    assert t.tag == "x" and t.result() == 1 and isinstance(t, cf.Future)


def test_waiting_on_a_task_from_its_own_task_is_refused_not_hung():
    with of.ThreadPoolExecutor(2) as ex:
        box = []
        gate = threading.Event()

        def me():
            gate.wait()
            return box[0].result()

        box.append(ex.submit(me))
        gate.set()
        with pytest.raises(RuntimeError, match="could never end"):
            box[0].result()


def test_a_timed_wait_on_its_own_task_times_out_as_cpythons_does():
    with of.ThreadPoolExecutor(1) as ex:
        box = []
        gate = threading.Event()

        def me():
            gate.wait()
            start = time.monotonic()
            try:
                box[0].result(timeout=0.2)
            except cf.TimeoutError:
                return time.monotonic() - start

        box.append(ex.submit(me))
        gate.set()
        # Waited its timeout out, as CPython does, before giving up.
        assert box[0].result() >= 0.2


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs /proc")
def test_a_cycle_of_waits_broken_by_a_timeout_ends_as_on_cpython():
    # `a` waits on `b` for good, then `b` on `a` with a timeout: the pool
    # knows `b`'s wait can never end, and waits its timeout out rather than
    # refusing it; `b` times out and returns, and then so does `a`.
    with of.ThreadPoolExecutor(2) as ex:
        fs, a_thread = {}, []
        go, b_runs, a_waits = threading.Event(), threading.Event(), threading.Event()

        def a():
            go.wait()
            # `b` must run on the other worker: a wait on it while still
            # queued would run it inline, here.
            b_runs.wait()
            a_thread.append(threading.get_native_id())
            try:
                with once_inside("result", a_waits.set):
                    return fs["b"].result()
            finally:
                a_waits.set()  # so that `b` ends, should `a` fail first

        def b():
            b_runs.set()
            a_waits.wait()
            until_asleep(a_thread[0])  # parked in its wait, its edge standing
            try:
                return fs["a"].result(timeout=0.2)
            except cf.TimeoutError:
                return "gave up"

        fs["a"], fs["b"] = ex.submit(a), ex.submit(b)
        go.set()
        assert (fs["a"].result(), fs["b"].result()) == ("gave up", "gave up")


def test_default_thread_names_count_on_from_the_stdlibs_executors():
    def number(ex):
        with ex:
            return int(ex._thread_name_prefix.rsplit("-", 1)[1])

    first = number(cf.ThreadPoolExecutor(1))
    assert number(of.ThreadPoolExecutor(1)) == first + 1
    assert number(cf.ThreadPoolExecutor(1)) == first + 2


def test_a_subclass_init_chooses_the_arguments():
    class IO(of.ThreadPoolExecutor):
        def __init__(self, label):
            super().__init__(max_workers=3, thread_name_prefix=f"io-{label}")

    with IO("disk") as ex:
        assert ex._max_workers == 3
        assert ex.submit(lambda: threading.current_thread().name).result().startswith("io-disk_")


def test_map_goes_through_an_overridden_submit():
    seen = []

    class Counting(of.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            seen.append(args)
            return super().submit(fn, *args, **kwargs)

    with Counting(2) as ex:
        assert list(ex.map(pow, [2, 3], [2, 2])) == [4, 9]
        assert list(ex.map(abs, [-1, -2, -3], buffersize=1)) == [1, 2, 3]
    assert seen == [(2, 2), (3, 2), (-1,), (-2,), (-3,)]


def test_map_goes_through_a_submit_set_on_the_instance():
    # As `unittest.mock.patch.object(ex, "submit", wraps=ex.submit)` does.
    from unittest import mock
    with of.ThreadPoolExecutor(1) as ex:
        with mock.patch.object(ex, "submit", wraps=ex.submit) as m:
            assert list(ex.map(abs, [-1, -2])) == [1, 2]
        assert m.call_count == 2


def test_map_through_an_overridden_submit_holds_no_result_it_yielded():
    class Obj:
        pass

    class Counting(of.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            return super().submit(fn, *args, **kwargs)

    with Counting(2) as ex:
        assert_each_freed(ex.map(lambda i: Obj(), range(3)))


def test_shutdown_tests_its_flags_for_truth_as_the_stdlib_does():
    ex = of.ThreadPoolExecutor(1)
    busy, gate = occupy(ex)
    queued = ex.submit(lambda: 1)
    try:
        ex.shutdown(None, cancel_futures=[])  # neither waits nor cancels
        assert not queued.cancelled()
        # False `wait`, true `cancel_futures`: returns with the worker
        # still blocked, the queued call cancelled.
        ex.shutdown(0, cancel_futures=1)
        assert queued.cancelled()
    finally:
        gate.set()
    ex.shutdown(wait=1)
    assert busy.result() is True


def test_shutdown_wait_from_its_own_thread_raises_instead_of_hanging():
    ex = of.ThreadPoolExecutor(2)
    f = ex.submit(lambda: ex.shutdown(wait=True))
    with pytest.raises(RuntimeError, match="cannot join current thread"):
        f.result(timeout=10)
    with pytest.raises(RuntimeError):
        ex.submit(int)  # it did shut down
    ex.shutdown(wait=True)


def test_the_stdlib_wait_counts_a_future_finishing_mid_call_once():
    # f is done natively but its callbacks are still running (one blocks)
    # when the stdlib's wait first looks at it; they finish only once the
    # wait has installed its waiter. Counted done at the look, f must not
    # be counted again when its callbacks finish: wait(ALL) has to go on
    # waiting for g, which is set only after f's callbacks all ran.
    f, g = of.Future(), cf.Future()
    in_callback, release = threading.Event(), threading.Event()
    f.add_done_callback(lambda _: (in_callback.set(), release.wait(60)))
    setter = threading.Thread(target=f.set_result, args=(1,))
    setter.start()
    assert in_callback.wait(60)
    assert f.done()
    waiters = []

    def installed(waiter):
        waiters.append(waiter)
        release.set()

    g._waiters = CallsOnAppend(installed)
    early = []

    def finish_g():
        assert release.wait(60)
        setter.join(60)  # every callback of f has run
        early.append(waiters[0].event.is_set())
        g.set_result(2)

    finisher = threading.Thread(target=finish_g)
    finisher.start()
    done, not_done = cf.wait([f, g], timeout=60)
    finisher.join()
    assert len(waiters) == 1
    assert early == [False], "wait(ALL) was woken with g still pending"
    assert done == {f, g} and not not_done


def test_a_subclass_running_the_stdlibs_future_init_still_tells_stdlib_waiters():
    # The stdlib's `Future.__init__` assigns `_condition` and `_waiters`
    # itself, so they are not made (with their notifier) on first use.
    class Mixed(of.Future):
        def __init__(self):
            cf.Future.__init__(self)

    done = Mixed()
    done.set_result(1)
    assert done._state == cf._base.FINISHED
    assert cf.wait([done], timeout=60).done == {done}

    pending, installed = Mixed(), threading.Event()
    pending._waiters = CallsOnAppend(lambda _: installed.set())
    finisher = threading.Thread(target=lambda: (installed.wait(60), pending.set_result(2)))
    finisher.start()
    assert cf.wait([pending], timeout=60).done == {pending}
    finisher.join()


def test_a_stdlib_wait_on_a_future_from_its_own_callback_returns_at_once():
    # The stdlib tells its waiters before it runs any callback: ours are
    # told by a callback of their own, queued behind the one that waits,
    # or by the wait's own read of `_state`, which must not wait for it.
    # (With the timeout, the old code's hang shows as a future not done.)
    seen = []
    with of.ThreadPoolExecutor(1) as ex:
        f = ex.submit(int)
        f.add_done_callback(lambda g: seen.append(cf.wait([g], timeout=30)))
        f.result()
    # The notifier attached while the future was pending, queued after a
    # callback that waits.
    g = of.Future()
    g.add_done_callback(lambda h: seen.append(cf.wait([h], timeout=30)))
    assert cf.wait([g], timeout=0).not_done == {g}  # makes `_condition` now
    g.set_result(1)
    assert [(len(r.done), len(r.not_done)) for r in seen] == [(1, 0), (1, 0)]


def test_a_base_exception_from_a_callback_is_raised_out_of_the_call_that_ran_it():
    # The stdlib logs an `Exception` from a callback and lets any other
    # `BaseException` (Ctrl-C, `sys.exit()`) out of the call that ran it.
    # Here every callback still runs first (the stdlib skips the rest).
    def stop(_):
        raise SystemExit(3)

    ran = []
    f = of.Future()
    f.add_done_callback(stop)
    f.add_done_callback(lambda _: ran.append("after"))
    with pytest.raises(SystemExit):
        f.set_result(1)
    assert ran == ["after"]
    with pytest.raises(SystemExit):
        f.add_done_callback(stop)  # on a done future: runs in the call

    def interrupt(_):
        raise KeyboardInterrupt

    g = of.Future()
    g.add_done_callback(interrupt)
    with pytest.raises(KeyboardInterrupt):
        g.cancel()
    assert g.cancelled()
    # An `Exception` is still only logged.
    h = of.Future()
    h.add_done_callback(lambda _: 1 / 0)
    h.set_result(1)
    # On a worker there is no call to raise it from: logged there.
    with of.ThreadPoolExecutor(1) as ex:
        gate = threading.Event()
        k = ex.submit(gate.wait)
        k.add_done_callback(stop)
        gate.set()
        assert k.result() is True
    # Queued calls a shutdown cancels run their callbacks in it.
    ex = of.ThreadPoolExecutor(1)
    busy, gate = occupy(ex)
    queued = ex.submit(int)
    queued.add_done_callback(stop)
    try:
        with pytest.raises(SystemExit):
            ex.shutdown(wait=False, cancel_futures=True)
    finally:
        gate.set()
    ex.shutdown()
    assert queued.cancelled()
    # A shutdown that also fails (joining its own thread, from a task) still
    # raises the callback's: the stdlib's would have left before the join.
    ex = of.ThreadPoolExecutor(2)
    busy, gate = occupy(ex)
    go = threading.Event()

    def shut_down_from_inside():
        go.wait()
        try:
            ex.shutdown(wait=True, cancel_futures=True)
        except BaseException as e:  # noqa: B036 - what escaped is the test
            return type(e)

    try:
        inside = ex.submit(shut_down_from_inside)
        queued = ex.submit(int)  # both workers busy: it stays queued
        queued.add_done_callback(stop)
        go.set()
        assert inside.result(timeout=30) is SystemExit
    finally:
        go.set()
        gate.set()
    ex.shutdown()
    assert queued.cancelled()


@pytest.mark.parametrize("how", ["result", "cancelled", "timeout", "map"])
def test_an_exception_raised_while_handling_another_has_it_as_context(how):
    # `raise` inside an `except` chains the exception being handled, and
    # the stdlib's `result()` raises with `raise`: tracebacks then say
    # "During handling of the above exception, another exception occurred".
    f = of.Future()
    expected = {"result": ValueError, "cancelled": cf.CancelledError,
                "timeout": TimeoutError, "map": ValueError}[how]
    if how == "result":
        f.set_exception(ValueError())
    elif how == "cancelled":
        f.cancel()
    with of.ThreadPoolExecutor(1) as ex:
        with pytest.raises(expected) as info:
            try:
                raise KeyError("handled")
            except KeyError:
                if how == "map":
                    list(ex.map(int, ["x"]))
                else:
                    f.result(timeout=0)
    assert isinstance(info.value.__context__, KeyError)
    # No cycle: raised again while handling itself, it is not its own context.
    try:
        raise info.value
    except expected as e:
        try:
            f.result(timeout=0) if how != "map" else None
        except expected:
            pass
        assert e.__context__ is not e
