#!/usr/bin/env bash
# Set up and run realtime-ser on this machine's microphone with the shipped model.
#
#   bash scripts/listen.sh [realtime-ser listen arguments...]      e.g. --device USB, --replay FILE
#
# 1. makes sure PortAudio and libsndfile are there (installs them with apt-get when run as root on
#    Debian/Ubuntu; otherwise says what to install),
# 2. creates a virtual environment in .venv (once) and installs realtime-ser into it (pip install -e .,
#    which compiles the feature kernel when a C++ compiler is there: g++ is installed with apt-get as
#    root; without one the install still works and the slower numpy features run),
# 3. runs `realtime-ser listen "$@"`: JSON lines on stdout, the dashboard on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
if ! have_lib libportaudio || ! have_lib libsndfile; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "listen.sh: installing libportaudio2 and libsndfile1" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libportaudio2 libsndfile1 >/dev/null
    else
        echo "listen.sh: PortAudio or libsndfile is missing: install them (Debian/Ubuntu:" \
             "sudo apt-get install libportaudio2 libsndfile1; macOS: brew install portaudio libsndfile)" >&2
        exit 1
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "listen.sh: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
if ! command -v g++ >/dev/null && ! command -v c++ >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "listen.sh: installing g++ (compiles the feature kernel)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
    else
        echo "listen.sh: no C++ compiler: the slower numpy features will run (install g++ or clang)" >&2
    fi
fi
"$VENV/bin/python" -m pip install -q -e .
exec "$VENV/bin/realtime-ser" listen "$@"
