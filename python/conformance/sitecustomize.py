"""Makes CPython's own test_concurrent_futures exercise ordered_futures.

Installed as ``sitecustomize`` in the site-packages of a throw-away virtual
environment (``conformance/run.sh`` does it), this runs at the start of
every interpreter of that environment, the suite's subprocesses included
(they run with ``-I``, which ignores ``PYTHONPATH`` but not site-packages).
It puts our names where the suite looks for the stdlib's: the package's
``ThreadPoolExecutor``, ``Future``, ``wait`` and ``as_completed``. The
stdlib's private ``_base`` functions are left as they are (ours hand
futures of other kinds to them).
"""
import concurrent.futures as _cf
import concurrent.futures._base as _base
import os as _os

import ordered_futures as _of

_cf.ThreadPoolExecutor = _of.ThreadPoolExecutor
_cf.Future = _of.Future
_base.Future = _of.Future
_cf.wait = _of.wait
_cf.as_completed = _of.as_completed

# The suite's subprocesses import ``test.test_concurrent_futures``: the
# Debian file is copied beside this one's folder, under ``suite/``.
_suite = _os.path.join(_os.path.dirname(__file__), "ordered_futures_suite")
if _os.path.isdir(_suite):
    import test as _test

    _test.__path__.append(_suite)
