#!/usr/bin/env bash
# The Python package's CI: builds the wheel the way `pip install ./python`
# does (PEP 517, maturin from the package registry), installs it in fresh
# virtual environments, runs our pytest suite, then CPython's own
# test_concurrent_futures (Debian's libpython3.11-testsuite) against it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m venv "$work/build"
"$work/build/bin/pip" install -q --upgrade pip
"$work/build/bin/pip" wheel -q --no-deps -w "$work/wheels" "$here"
wheel=$(ls "$work"/wheels/ordered_futures-*.whl)

# Our suite, run from outside the source tree so the installed package is
# the one imported.
python3 -m venv "$work/test"
"$work/test/bin/pip" install -q "$wheel" 'pytest>=7'
(cd "$work" && timeout 900 "$work/test/bin/python" -m pytest -q -p no:cacheprovider "$here/tests")

# CPython's suite, in an environment of its own: its sitecustomize puts our
# names in concurrent.futures for every interpreter there (the suite's
# subprocesses included), which would also change pip's own imports.
suite=/usr/lib/python3.11/test/test_concurrent_futures.py
if [ ! -f "$suite" ]; then
    apt-get update -qq && apt-get install -y -qq libpython3.11-testsuite >/dev/null
fi
python3 -m venv "$work/conformance"
"$work/conformance/bin/pip" install -q "$wheel"
site=$("$work/conformance/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$here/conformance/sitecustomize.py" "$site/"
mkdir -p "$site/ordered_futures_suite"
cp "$suite" "$site/ordered_futures_suite/"
(cd "$work" && timeout 600 "$work/conformance/bin/python" "$here/conformance/run.py")
