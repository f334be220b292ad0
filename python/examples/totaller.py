"""The example Python users post about callbacks, on ordered_futures.

Submit f(x) = x*x, failing when x*x % 7 == 0, for x from 1000 down to 1,
each twice (2,000 tasks), and total the outcomes in done-callbacks with
``+=`` on a shared dict. With the stdlib (or without serial_callbacks) the
callbacks of different futures race on the dict, and the usual advice is a
lock; ``serial_callbacks=True`` runs them one at a time, so no lock is
needed.

Run: python python/examples/totaller.py
"""
from ordered_futures import ThreadPoolExecutor


def square(x):
    y = x * x
    if y % 7 == 0:
        raise ValueError(f"{x}^2 = {y} is divisible by 7")
    return y


totals = {"errors": 0, "successes": 0, "total": 0, "results": []}


def tally(future):
    if future.exception() is not None:
        totals["errors"] += 1
    else:
        totals["successes"] += 1
        totals["results"].append(future.result())
    totals["total"] += 1


with ThreadPoolExecutor(max_workers=4, serial_callbacks=True) as executor:
    for x in range(1000, 0, -1):
        for _ in range(2):
            executor.submit(square, x).add_done_callback(tally)

print(f"errors = {totals['errors']}")
print(f"successes = {totals['successes']}")
print(f"total = {totals['total']}")
assert (totals["errors"], totals["successes"], totals["total"]) == (284, 1716, 2000), totals
assert len(totals["results"]) == totals["successes"]
print("ok: every outcome counted once, no lock")
