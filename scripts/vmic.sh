#!/usr/bin/env bash
# The PulseAudio virtual microphone used by the live tests and CI.
#
#   scripts/vmic.sh start    start a PulseAudio server with a null sink "vmic" (16 kHz mono s16le)
#                            and make its monitor "vmic.monitor" the default source; idempotent
#   scripts/vmic.sh stop     stop that server (only the one for this PULSE_RUNTIME_PATH / user)
#   scripts/vmic.sh status   exit 0 when the server answers and the vmic sink exists
#
# Audio played with `paplay --device=vmic FILE` comes back, bit-exact and at real-time pace, from
# PortAudio's "pulse" (or "default") input device. `-n` (no default.pa) and `norewinds=1` matter:
# without them the first ~90 ms of each playback came back corrupted and the first callback took 2 s.
# Works as root in user mode (pulseaudio warns but runs). Honours PULSE_RUNTIME_PATH, so a caller can
# run a private server; the log goes to $VMIC_LOG (default: /tmp/realtime-ser-vmic.log). The server runs
# until stopped, or exits after $VMIC_EXIT_IDLE_S seconds without clients if that is set (>= 0): the
# test fixture's private servers use it, so that a killed test run leaves no daemon behind.
set -euo pipefail

SINK=vmic
RATE=16000
RESAMPLE=soxr-vhq  # PortAudio opens "pulse" at 44.1 kHz: resample transparently (the default, speex-float-1, tilts the spectrum)
STARTUP_TIMEOUT_S=10
POLL_S=0.2
LOG=${VMIC_LOG:-/tmp/realtime-ser-vmic.log}
EXIT_IDLE_S=${VMIC_EXIT_IDLE_S:--1}

answers() { pactl info >/dev/null 2>&1; }
has_sink() { pactl list short sinks 2>/dev/null | awk '{print $2}' | grep -qx "$SINK"; }

wait_until() {  # wait_until <description> <command...>: poll until the command succeeds
    local what=$1; shift
    local tries
    tries=$(awk -v t="$STARTUP_TIMEOUT_S" -v p="$POLL_S" 'BEGIN { print int(t / p) }')
    for ((i = 0; i < tries; i++)); do
        if "$@"; then return 0; fi
        sleep "$POLL_S"
    done
    echo "vmic: $what did not happen within ${STARTUP_TIMEOUT_S} s; pulseaudio log: $LOG" >&2
    tail -n 20 "$LOG" >&2 || true
    return 1
}

start() {
    for tool in pulseaudio pactl paplay; do
        command -v "$tool" >/dev/null || {
            echo "vmic: $tool not found; install: apt-get install -y pulseaudio pulseaudio-utils libasound2-plugins" >&2
            exit 1
        }
    done
    if answers && has_sink; then
        pactl set-default-source "$SINK.monitor"
        echo "vmic: already running ($(pactl info | sed -n 's/^Server String: //p'))" >&2
        return 0
    fi
    if answers; then  # a server without our sink (e.g. a desktop session): add the sink to it
        pactl load-module module-null-sink "sink_name=$SINK" "rate=$RATE" channels=1 format=s16le norewinds=1 >/dev/null
    else
        pulseaudio --kill >/dev/null 2>&1 || true  # a half-dead daemon holding the runtime dir
        pulseaudio -n --daemonize=yes --exit-idle-time="$EXIT_IDLE_S" --disallow-exit --resample-method="$RESAMPLE" \
            --log-target="file:$LOG" \
            --load=module-native-protocol-unix \
            --load="module-null-sink sink_name=$SINK rate=$RATE channels=1 format=s16le norewinds=1" \
            2>>"$LOG"
        wait_until "pactl info answering" answers
    fi
    wait_until "sink $SINK appearing" has_sink
    pactl set-default-source "$SINK.monitor"
    echo "vmic: started ($(pactl info | sed -n 's/^Server String: //p'))" >&2
}

stop() {
    if pulseaudio --check 2>/dev/null; then
        pulseaudio --kill
        wait_until "pulseaudio exiting" bash -c '! pulseaudio --check 2>/dev/null'
        echo "vmic: stopped" >&2
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) answers && has_sink ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
