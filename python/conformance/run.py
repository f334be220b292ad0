"""Runs CPython's own test_concurrent_futures against ordered_futures.

Run it with an interpreter whose site-packages hold this folder's
``sitecustomize.py`` and the suite under ``ordered_futures_suite/`` (see
``python/ci.sh``). It runs the classes for thread pools, futures,
``wait``, ``as_completed`` and shutdown; a test listed in ``DIFFERENCES``
is skipped with its reason (docs/python.md lists the same); every other
test must pass. Exits non-zero on any failure.
"""
import sys
import unittest

CLASSES = [
    "FutureTests",
    "ThreadPoolWaitTests",
    "ThreadPoolAsCompletedTest",
    "ThreadPoolShutdownTest",
    "ThreadPoolExecutorTest",
    "ThreadPoolInitializerTest",
    "ThreadPoolFailingInitializerTest",
]

CANCEL = ("a cancelled future is done at once, for wait() and as_completed() "
          "too: there is no CANCELLED state that waiters are not yet told of")
THREADS = ("the workers are native threads started with the executor, not "
           "threading.Thread objects made on demand: there is no _threads set")

RACE = ("a call submitted just before shutdown(cancel_futures=True) may be "
        "cancelled before a worker took it (about 1 run in 3 here): the stdlib "
        "starts a thread inside submit, which happens to start the call first; "
        "neither promises it")

RACE_ALL = ("all 50 calls submitted just before shutdown(cancel_futures=True) "
            "may be cancelled before any worker took one: on 2 vCPUs the "
            "kernel queues a woken worker behind the submitting thread, which "
            "runs on into shutdown (19-32 of 40 runs of this test in one "
            "process, at this commit and at 441ea85 alike); the stdlib's "
            "submit starts a thread and waits for it to start, which lets it "
            "take a call first; neither promises it")

# test id (class.method) -> why it differs, by design.
DIFFERENCES = {
    "FutureTests.test_cancel": CANCEL,
    "ThreadPoolWaitTests.test_first_completed": CANCEL,
    "ThreadPoolWaitTests.test_first_exception_some_already_complete": CANCEL,
    "ThreadPoolExecutorTest.test_idle_thread_reuse": THREADS,
    "ThreadPoolExecutorTest.test_saturation": THREADS,
    "ThreadPoolShutdownTest.test_threads_terminate": THREADS,
    "ThreadPoolShutdownTest.test_cancel_futures_wait_false": RACE,
    "ThreadPoolShutdownTest.test_cancel_futures": RACE_ALL,
}


def tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from tests(t)
        else:
            yield t


def main():
    import test.test_concurrent_futures as module

    loader = unittest.TestLoader()
    kept = unittest.TestSuite()
    skipped = []
    for name in CLASSES:
        for t in tests(loader.loadTestsFromName(name, module)):
            key = f"{type(t).__name__}.{t._testMethodName}"
            if key in DIFFERENCES:
                skipped.append((key, DIFFERENCES[key]))
            else:
                kept.addTest(t)
    for key, why in skipped:
        print(f"intended difference, skipped: {key}: {why}")
    result = unittest.TextTestRunner(verbosity=2).run(kept)
    print(f"conformance: {result.testsRun} run, {len(skipped)} intended differences, "
          f"{len(result.failures) + len(result.errors)} failed")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
