"""The callback guarantees: exactly once, in the order added, never two of
one future at a time (never two of one executor with serial_callbacks),
even when callbacks are added while the future completes."""
import logging
import threading
import time

import pytest

import ordered_futures as of


def test_callbacks_added_while_completing_run_once_in_order_10000_rounds():
    # Each round: 2 callbacks before, then one thread completes the future
    # while another adds 3 more. The callbacks give up the GIL
    # (time.sleep(0)) so the adder really runs during the drain. A round
    # counts as raced when a callback was added after the future was done
    # and still ran on the completing thread: it joined a drain under way.
    # Rounds where no add met a drain would prove nothing, so some must.
    raced = 0
    completer = threading.current_thread()
    for _ in range(10_000):
        f = of.Future()
        seen = []
        late = []

        def cb(i):
            def run(fut):
                assert fut is f
                seen.append(i)
                if i in late and threading.current_thread() is completer:
                    seen.append("raced")
                time.sleep(0)
            return run

        f.add_done_callback(cb(0))
        f.add_done_callback(cb(1))
        go = threading.Barrier(2)

        def adder():
            go.wait()
            for i in range(2, 5):
                if f.done():
                    late.append(i)
                f.add_done_callback(cb(i))

        t = threading.Thread(target=adder)
        t.start()
        go.wait()
        f.set_result(None)
        t.join()
        raced += "raced" in seen
        assert [i for i in seen if i != "raced"] == [0, 1, 2, 3, 4]
    assert raced > 0, "no round added a callback while the future drained"


def test_a_callback_added_after_done_runs_at_once_on_the_adding_thread():
    f = of.Future()
    f.set_result(1)
    where = []
    f.add_done_callback(lambda fut: where.append(threading.current_thread()))
    assert where == [threading.current_thread()]


def test_callbacks_of_one_future_never_overlap():
    # Callbacks that give up the GIL mid-way: if two of one future could
    # run at once, the second would see `inside` set.
    overlaps = []
    with of.ThreadPoolExecutor(4) as ex:
        for _ in range(300):
            f = ex.submit(time.sleep, 0)
            inside = []

            def cb(fut, inside=inside):
                if inside:
                    overlaps.append(fut)
                inside.append(1)
                time.sleep(0)
                inside.pop()

            adders = [threading.Thread(target=lambda f=f: [f.add_done_callback(cb) for _ in range(3)]) for _ in range(2)]
            for a in adders:
                a.start()
            for a in adders:
                a.join()
            f.result()
    assert overlaps == []


def seed_totaller(switch=False):
    """The program the question was asked about: f(x) = x*x, failing when
    x*x % 7 == 0, for x from 1000 down to 1, each twice, totalled in
    done-callbacks with ``+=`` on a shared dict and no lock."""
    totals = {"errors": 0, "successes": 0, "total": 0}

    def square(x):
        y = x * x
        if y % 7 == 0:
            raise ValueError(f"{x}^2 = {y} is divisible by 7")
        return y

    def tally(f):
        if f.exception() is not None:
            totals["errors"] += 1
        else:
            totals["successes"] += 1
        if switch:
            # Gives up the GIL in the middle of the update: a `+=` on a
            # dict has no point where 3.11 switches threads, so without
            # this the count would hold even with callbacks overlapping.
            n = totals["total"]
            time.sleep(0)
            totals["total"] = n + 1
        else:
            totals["total"] += 1

    with of.ThreadPoolExecutor(4, serial_callbacks=True) as ex:
        for x in range(1000, 0, -1):
            for _ in range(2):
                ex.submit(square, x).add_done_callback(tally)
    return totals


def test_totaller_with_serial_callbacks_1000_runs_no_lock():
    for _ in range(1000):
        assert seed_totaller() == {"errors": 284, "successes": 1716, "total": 2000}


def test_totaller_stays_right_when_callbacks_give_up_the_gil():
    for _ in range(20):
        assert seed_totaller(switch=True) == {"errors": 284, "successes": 1716, "total": 2000}


def test_serial_callbacks_never_overlap_across_futures():
    inside, overlaps = [], []

    def cb(fut):
        if inside:
            overlaps.append(fut)
        inside.append(1)
        time.sleep(0)
        inside.pop()

    with of.ThreadPoolExecutor(4, serial_callbacks=True) as ex:
        for _ in range(2000):
            ex.submit(time.sleep, 0).add_done_callback(cb)
    assert overlaps == []


def test_serial_callbacks_keep_each_futures_order():
    seen = {}
    with of.ThreadPoolExecutor(4, serial_callbacks=True) as ex:
        for n in range(200):
            f = ex.submit(int, n)
            for i in range(5):
                f.add_done_callback(lambda fut, i=i: seen.setdefault(fut.result(), []).append(i))
    assert seen == {n: [0, 1, 2, 3, 4] for n in range(200)}


def test_a_raising_callback_is_logged_and_the_others_still_run(caplog):
    f = of.Future()
    ran = []
    f.add_done_callback(lambda fut: ran.append("first"))
    f.add_done_callback(lambda fut: 1 / 0)
    f.add_done_callback(lambda fut: ran.append("third"))
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        f.set_result(None)
    assert ran == ["first", "third"]
    [record] = [r for r in caplog.records if r.name == "concurrent.futures"]
    assert record.getMessage().startswith("exception calling callback for <Future at")
    assert record.exc_info[0] is ZeroDivisionError


def test_a_raising_callback_on_a_worker_is_logged_too(caplog):
    ran = threading.Event()
    with caplog.at_level(logging.ERROR, logger="concurrent.futures"):
        with of.ThreadPoolExecutor(1) as ex:
            gate = threading.Event()
            f = ex.submit(gate.wait)
            f.add_done_callback(lambda fut: {}["missing"])
            f.add_done_callback(lambda fut: ran.set())
            gate.set()
    assert ran.is_set()
    assert "exception calling callback for" in caplog.text
    assert "KeyError" in caplog.text


def test_cancel_runs_the_callbacks_once():
    f = of.Future()
    calls = []
    f.add_done_callback(calls.append)
    assert f.cancel() and f.cancel()
    assert calls == [f]


@pytest.mark.parametrize("serial", [False, True])
def test_every_callback_of_every_future_runs_exactly_once(serial):
    counts = {}
    lock = threading.Lock()

    def cb(fut):
        with lock:
            counts[fut] = counts.get(fut, 0) + 1

    with of.ThreadPoolExecutor(4, serial_callbacks=serial) as ex:
        fs = [ex.submit(int, i) for i in range(2000)]
        for f in fs:
            f.add_done_callback(cb)
    assert len(counts) == 2000 and set(counts.values()) == {1}
