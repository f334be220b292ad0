"""Helpers shared by the test files (imported by name: pytest puts this
directory on the path, as it has no __init__.py)."""


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
