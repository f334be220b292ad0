"""Python's ThreadPoolExecutor on the same workload as the compare bench:
N empty tasks submitted from one thread, then waited for. Prints ns/task.

Usage: python3 benches/python_tpe.py N WORKERS
"""
import sys
import time
from concurrent.futures import ThreadPoolExecutor, wait


def noop():
    return None


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    with ThreadPoolExecutor(max_workers=workers) as ex:
        ex.submit(noop).result()  # warm up the workers
        t0 = time.perf_counter()
        fs = [ex.submit(noop) for _ in range(n)]
        wait(fs)
        dt = time.perf_counter() - t0
    print(f"{dt * 1e9 / n:.1f}")


if __name__ == "__main__":
    main()
