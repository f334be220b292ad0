#!/usr/bin/env bash
# The Python package's CI: builds the wheel the way `pip install ./python`
# does (PEP 517, maturin from the package registry), installs it in fresh
# virtual environments, runs our pytest suite, then CPython's own
# test_concurrent_futures (Debian's libpython3.11-testsuite) against it.
#
#   bash python/ci.sh              # all of it
#   bash python/ci.sh --preflight  # only check (and install) what it needs
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# Debian packages, installed with sudo unless root; elsewhere, a message.
apt_install() {
    local sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    command -v apt-get >/dev/null || { echo "python/ci.sh needs: $* (Debian's names); install them"; exit 1; }
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "$@" >/dev/null
}

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "python/ci.sh needs python3 3.11 or later, found $(python3 --version 2>&1)"; exit 1; }
python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
# CPython's suite is the 3.11 one (one file; later versions split it into
# a package, whose layout run.py does not know): run against 3.11 only.
version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
suite=/usr/lib/python3.11/test/test_concurrent_futures.py
if [ "$version" = 3.11 ] && [ ! -f "$suite" ]; then
    apt_install libpython3.11-testsuite
fi
[ "${1:-}" != --preflight ] || exit 0

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
# A test still running after 10 minutes prints every thread's stack (the
# run then ends at 15): a hang says where it is.
(cd "$work" && timeout 900 "$work/test/bin/python" -m pytest -q -p no:cacheprovider \
    -o faulthandler_timeout=600 "$here/tests")

# CPython's suite, in an environment of its own: its sitecustomize puts our
# names in concurrent.futures for every interpreter there (the suite's
# subprocesses included), which would also change pip's own imports.
if [ "$version" != 3.11 ]; then
    echo "conformance skipped: CPython's own suite is run against 3.11, this is $version"
    exit 0
fi
python3 -m venv "$work/conformance"
"$work/conformance/bin/pip" install -q "$wheel"
site=$("$work/conformance/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$here/conformance/sitecustomize.py" "$site/"
mkdir -p "$site/ordered_futures_suite"
cp "$suite" "$site/ordered_futures_suite/"
(cd "$work" && timeout 600 "$work/conformance/bin/python" "$here/conformance/run.py")
