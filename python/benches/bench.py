"""Our ThreadPoolExecutor against the stdlib's, side by side in one process
on the same Python: each workload runs on both, alternating, for several
rounds; the table gives each side's seconds and the ratio (stdlib time /
ours: above 1 is faster for us) as min–max over the rounds.

    python benches/bench.py [rounds]
"""
import concurrent.futures as cf
import hashlib
import sys
import time

import ordered_futures as of

N = 100_000
M = 10_000


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def submit_result_roundtrip(mod):
    with mod.ThreadPoolExecutor(2) as ex:
        return timed(lambda: [ex.submit(int).result() for _ in range(N)])


def submit_all_then_result(mod):
    with mod.ThreadPoolExecutor(2) as ex:
        def run():
            fs = [ex.submit(int) for _ in range(N)]
            for f in fs:
                f.result()
        return timed(run)


def map_(mod):
    with mod.ThreadPoolExecutor(2) as ex:
        return timed(lambda: list(ex.map(abs, range(N))))


def as_completed_(mod):
    with mod.ThreadPoolExecutor(2) as ex:
        return timed(lambda: [f.result() for f in mod.as_completed([ex.submit(int) for _ in range(M)])])


def wait_all(mod):
    with mod.ThreadPoolExecutor(2) as ex:
        return timed(lambda: mod.wait([ex.submit(int) for _ in range(M)]))


def add_done_callback(mod):
    fs = [mod.Future() for _ in range(N)]

    def cb(f):
        pass

    return timed(lambda: [f.add_done_callback(cb) for f in fs])


BUF = bytes(1 << 20)


def sha256(b):
    return hashlib.sha256(b).digest()


def hashing(mod):
    # hashlib releases the GIL over large buffers: both pools use 2 cores.
    with mod.ThreadPoolExecutor(2) as ex:
        return timed(lambda: list(ex.map(sha256, [BUF] * 400)))


WORKLOADS = [
    ("submit + result, 100,000 one at a time", submit_result_roundtrip),
    ("submit 100,000, then result each", submit_all_then_result),
    ("map over 100,000 items", map_),
    ("as_completed over 10,000 (with submits)", as_completed_),
    ("wait(ALL) over 10,000 (with submits)", wait_all),
    ("add_done_callback x 100,000", add_done_callback),
    ("sha256 of 400 x 1 MiB (GIL released)", hashing),
]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"Python {sys.version.split()[0]}, {rounds} rounds")
    print(f"| workload | stdlib s | ours s | ratio (stdlib/ours) |")
    print(f"|---|---:|---:|---:|")
    for name, fn in WORKLOADS:
        s, o = [], []
        for _ in range(rounds):
            s.append(fn(cf))
            o.append(fn(of))
        ratios = sorted(a / b for a, b in zip(s, o))
        print(f"| {name} | {min(s):.3f}–{max(s):.3f} | {min(o):.4f}–{max(o):.4f} "
              f"| {ratios[0]:.1f}–{ratios[-1]:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
