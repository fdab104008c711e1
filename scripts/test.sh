#!/usr/bin/env bash
# Set up and run the whole test suite, exactly as CI does (bash .ci/run adds the Debian packages first).
#
#   bash scripts/test.sh [--lane fast|slow|all] [pytest arguments...]
#
# --lane (default all: the whole suite, the README's test command): fast = every test not marked slow, live
# or corpus (pure and CLI tests, about a minute; no PulseAudio started), slow = those (tests/conftest.py
# sorts them; docs/testing.md). TEST_INSTALL=0 skips steps 0-1 (a second lane right after a first).
# 0. on Debian/Ubuntu as root, installs the system audio packages that are missing (PortAudio, libsndfile,
#    PulseAudio for the virtual microphone); elsewhere it says what the live tests need,
# 1. installs the package with its dev extras (pip install -e ".[dev]"; quick when already satisfied),
# 2. starts a private PulseAudio virtual microphone (scripts/vmic.sh, on its own runtime directory, so it
#    neither disturbs nor depends on any other PulseAudio server on the machine),
# 3. runs python -m pytest -q, whose exit code is this script's exit code; a test running longer than
#    TEST_STALL_S (300) gets every thread's traceback printed, and the whole run is aborted (exit 124,
#    tracebacks printed) after TEST_TIMEOUT_S (1500): a hang must not eat CI's 30-minute budget,
# 4. stops that PulseAudio server, whatever happened.
# Live tests skip when there is no PulseAudio, and corpus tests when ../shared/data is missing; with CI
# set (CI=true) both fail instead. Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

LANE=all
case "${1:-}" in
    --lane) LANE=${2:-}; shift 2 || { echo "test.sh: error: --lane needs fast, slow or all" >&2; exit 2; } ;;
    --lane=*) LANE=${1#--lane=}; shift ;;
esac
case "$LANE" in
    fast|slow|all) ;;
    *) echo "test.sh: error: unknown lane '$LANE'; use --lane fast, slow or all" >&2; exit 2 ;;
esac
TEST_INSTALL=${TEST_INSTALL:-1}

PYTHON=${PYTHON:-python}
TEST_STALL_S=${TEST_STALL_S:-300}
TEST_TIMEOUT_S=${TEST_TIMEOUT_S:-1500}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_PROGRESS_BAR=off

# g++ builds the compiled feature kernel (realtime_ser/_kernel.c, _fft.cpp) during pip install
DEB_PACKAGES=(libportaudio2 libsndfile1 pulseaudio pulseaudio-utils libasound2-plugins g++)
missing=()
if [ "$TEST_INSTALL" != 0 ] && command -v dpkg-query >/dev/null; then
    for p in "${DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: apt-get install ${missing[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "test.sh: missing Debian packages ${missing[*]}: live tests will skip (install them with apt-get)" >&2
    fi
fi

if [ "$TEST_INSTALL" != 0 ] && ! "$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "test.sh: apt-get install python3-dev (Python.h, for the compiled feature kernel)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dev >/dev/null
    else
        echo "test.sh: no Python.h for $PYTHON: the feature kernel will not build (its tests fail with CI set)" >&2
    fi
fi

if [ "$TEST_INSTALL" != 0 ]; then
    echo "test.sh: pip install -e .[dev]" >&2
    "$PYTHON" -m pip install -q -e ".[dev]"
fi

if [ "$LANE" = fast ]; then  # no live test in the fast lane: no PulseAudio
    echo "test.sh: python -m pytest -q --lane fast $*" >&2
    exec timeout --signal=ABRT --kill-after=30 "$TEST_TIMEOUT_S" \
        "$PYTHON" -m pytest -q -o faulthandler_timeout="$TEST_STALL_S" --lane fast "$@"
fi

PULSE_RUNTIME_PATH=$(mktemp -d "${TMPDIR:-/tmp}/realtime-ser-pulse.XXXXXX")
export PULSE_RUNTIME_PATH VMIC_LOG="$PULSE_RUNTIME_PATH/pulseaudio.log"
unset PULSE_SERVER
cleanup() {
    bash scripts/vmic.sh stop || echo "test.sh: could not stop PulseAudio ($PULSE_RUNTIME_PATH)" >&2
    rm -rf "$PULSE_RUNTIME_PATH"
}
trap cleanup EXIT
if ! bash scripts/vmic.sh start; then
    echo "test.sh: no virtual microphone: live tests will skip (with CI set: fail)" >&2
fi

echo "test.sh: python -m pytest -q --lane $LANE $*" >&2
# SIGABRT makes pytest's faulthandler print where every thread was stuck
timeout --signal=ABRT --kill-after=30 "$TEST_TIMEOUT_S" \
    "$PYTHON" -m pytest -q -o faulthandler_timeout="$TEST_STALL_S" --lane "$LANE" "$@"
