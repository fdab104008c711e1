"""``--serve``: /events read by a real websockets client (several at once, a slow one dropped while
the tracker keeps its pace), the page in headless Chromium (DevTools protocol over websockets:
the DOM shows the emotion changing, no request leaves the server), a screenshot."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from websockets.sync.client import connect

from realtime_ser.runner import OutputThread
from realtime_ser.sinks.serve import ServeOutput

from conftest import skip_or_fail
from helpers import HIGH_F0, LOW_F0, voice, write_audio

TIMEOUT_S = 120
URL_RE = re.compile(r"serving (http://\S+/) .*events: (ws://\S+)\)")
SR = 16_000


@pytest.fixture(scope="module")
def sad_happy_wav(tmp_path_factory) -> Path:
    x = np.concatenate([np.zeros(SR // 2, np.float32), voice(LOW_F0, 3.0), voice(HIGH_F0, 3.5, seed=1),
                        np.zeros(SR, np.float32)])
    return write_audio(tmp_path_factory.mktemp("serve") / "sad_happy.wav", x)


class Listen:
    """``realtime-ser listen --replay ... --serve 127.0.0.1:0`` in the background; knows its URLs."""

    def __init__(self, model: Path, wav: Path, *extra: str, pace: str = "realtime") -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "realtime_ser", "listen", "--replay", str(wav),
                                      "--pace", pace, "--model", str(model), "--no-dashboard",
                                      "--serve", "127.0.0.1:0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None  # piped
        line = self.proc.stderr.readline()
        m = URL_RE.search(line)
        assert m, line
        self.url, self.ws_url = m.group(1), m.group(2)

    def finish(self) -> tuple[list[dict], str]:
        out, err = self.proc.communicate(timeout=TIMEOUT_S)
        assert self.proc.returncode == 0, err
        return [json.loads(line) for line in out.splitlines()], err


def read_all(ws_url: str, sink: list, **kw) -> None:
    with connect(ws_url, **kw) as ws:
        for message in ws:
            assert isinstance(message, str)  # text messages
            sink.append(json.loads(message))


def test_events_reach_several_clients_exactly_as_stdout(tiny_model_path, sad_happy_wav):
    run = Listen(tiny_model_path, sad_happy_wav)
    got: list[list[dict]] = [[], [], []]
    readers = [threading.Thread(target=read_all, args=(run.ws_url, g), daemon=True) for g in got]
    for r in readers:
        r.start()
    events, _ = run.finish()
    for r in readers:
        r.join(10)
    # connected during the replay's first half-second: every client sees every event, in order,
    # except possibly the start event if it connected after it was sent
    for g in got:
        assert g, "no events"
        assert g == events[len(events) - len(g):]
        assert g[-1]["type"] == "end"
        assert len(g) >= len(events) - 1
    assert {e["emotion"] for e in events if e["type"] == "change"} >= {"sad", "happy"}


def test_page_and_unknown_paths_and_foreign_origins(tiny_model_path, sad_happy_wav):
    run = Listen(tiny_model_path, sad_happy_wav, "--duration", "2")
    try:
        with urllib.request.urlopen(run.url, timeout=10) as r:
            page = r.read().decode("utf-8")
            assert r.headers["Content-Type"].startswith("text/html")
            assert "default-src 'none'" in r.headers["Content-Security-Policy"]
        assert "<script" in page and "/events" in page
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing loaded from elsewhere
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(run.url + "nothing", timeout=10)
        assert e.value.code == 404
        from websockets.exceptions import InvalidStatus

        # another web site open in the user's browser may not read the stream
        with pytest.raises(InvalidStatus), connect(run.ws_url, origin="http://evil.example"):
            pass
    finally:
        run.finish()


OFFER_BURST = 20  # events offered back to back in the slow-client test, then
OFFER_PAUSE_S = 0.005  # a pause: a burst of 3000 at full speed outruns a reader on a loaded 2-core machine


def test_slow_client_is_dropped_fast_client_gets_everything():
    server = ServeOutput(host="127.0.0.1", port=0)
    n = 3000
    thread = OutputThread(output=server, capacity=n + 10)
    thread.start()
    fast: list[dict] = []
    fast_reader = threading.Thread(target=read_all, args=(server.ws_url, fast), daemon=True)
    fast_reader.start()
    slow_sock = socket.socket()
    slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow_sock.connect(("127.0.0.1", server.port))
    stack = contextlib.ExitStack()
    stack.enter_context(connect(server.ws_url, sock=slow_sock, max_queue=1))  # never reads: the library stops too
    deadline = time.monotonic() + 10
    while len(server.clients) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(server.clients) == 2
    payload = {"pad": "x" * 4000}  # 12 MB in all: more than the kernel's socket buffers hold
    offer_s = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        thread.offer({"schema": 1, "type": "prediction", "i": i, **payload})
        offer_s += time.perf_counter() - t0
        if i % OFFER_BURST == OFFER_BURST - 1:
            time.sleep(OFFER_PAUSE_S)  # still ~1000x the tracker's event rate, but a busy reader keeps up
    # the end drains for at most DRAIN_S: let a reader that keeps up (slowly, on a busy machine) catch up
    deadline = time.monotonic() + 30
    while len(fast) < n and fast_reader.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    thread.close(timeout=30)
    fast_reader.join(30)
    assert not fast_reader.is_alive()  # the server closed the connection normally at the end
    assert [e["i"] for e in fast] == list(range(n))  # the fast client lost nothing
    assert server.dropped_clients == 1 and thread.dropped == 0
    print(f"\n{n} events offered in {offer_s * 1e3:.1f} ms ({offer_s / n * 1e6:.2f} us each), slow client dropped")
    slow_sock.close()
    stack.close()


# ------------------------------------------------------------------ the page in a real browser

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CDP_START_TIMEOUT_S = 30
POLL_S = 0.2
VIEWPORT = (900, 420)
SCREENSHOT_ENV = "REALTIME_SER_OVERLAY_PNG"  # where to keep a screenshot (docs/overlay.png is made so)


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    skip_or_fail("headless Chromium is not installed (Debian package `chromium`, in .ci/run's apt-get line)")


class Browser:
    """Headless Chromium driven through its DevTools protocol (a websockets client)."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.proc = subprocess.Popen([binary, "--headless", "--no-sandbox", "--disable-gpu",
                                      "--disable-background-networking", "--no-first-run",
                                      f"--user-data-dir={profile}", "--remote-debugging-port=0",
                                      "--window-size=900,520", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + CDP_START_TIMEOUT_S
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline and self.proc.poll() is None, "Chromium did not start"
            time.sleep(POLL_S)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None))
        self.next_id = 0
        self.requests: list[str] = []
        self.call("Emulation.setDeviceMetricsOverride", width=VIEWPORT[0], height=VIEWPORT[1], deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("method") == "Network.requestWillBeSent":
                self.requests.append(msg["params"]["request"]["url"])
            if msg.get("id") == self.next_id:
                assert "error" not in msg, msg
                return msg.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        self._stack.close()
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def browser(tmp_path):
    binary = chromium()
    b = Browser(binary, tmp_path / "chromium-profile")
    yield b
    b.close()


@pytest.mark.slow
def test_overlay_page_in_headless_chromium_shows_the_emotion_changing(tiny_model_path, sad_happy_wav, browser,
                                                                      tmp_path):
    run = Listen(tiny_model_path, sad_happy_wav)
    browser.call("Network.enable")
    browser.call("Page.enable")
    browser.call("Page.navigate", url=run.url + "?overlay=1")
    seen: list[str] = []
    shots: dict[str, bytes] = {}
    while run.proc.poll() is None:
        emotion = browser.evaluate("document.body.dataset.emotion")
        if emotion and (not seen or seen[-1] != emotion):
            seen.append(emotion)
        if emotion in ("sad", "happy") and emotion not in shots:
            time.sleep(0.5)  # let the bars' transition finish
            shots[emotion] = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        time.sleep(POLL_S)
    events, _ = run.finish()
    text = browser.evaluate("document.getElementById('emotion').textContent")
    transparent = browser.evaluate("getComputedStyle(document.body).backgroundColor")
    rows = browser.evaluate("[...document.querySelectorAll('#bars .row')].map(r => r.dataset.label)")
    changes = [e["emotion"] for e in events if e["type"] == "change"]
    assert "sad" in seen and "happy" in seen and seen.index("sad") < seen.index("happy"), seen
    assert [e for e in seen if e in changes] == [c for c in changes if c in seen]  # the page followed the stream
    assert text == changes[-1]
    assert transparent == "rgba(0, 0, 0, 0)"  # ?overlay=1: for an OBS browser source
    assert rows == ["neutral", "happy", "sad"]
    # no external request: only this server (the page, then its WebSocket)
    assert browser.requests and all(u.startswith(run.url) or u.startswith(run.ws_url) for u in browser.requests), \
        browser.requests
    for emotion, png in shots.items():
        assert png.startswith(b"\x89PNG") and len(png) > 1000
        (tmp_path / f"overlay-{emotion}.png").write_bytes(png)


@pytest.mark.slow
def test_full_page_screenshot(tiny_model_path, sad_happy_wav, browser):
    """The non-overlay page (``/``) during a replay: screenshots when it shows sad, then happy. With
    REALTIME_SER_OVERLAY_PNG set, both are kept there one above the other (how docs/overlay.png is made)."""
    run = Listen(tiny_model_path, sad_happy_wav)
    browser.call("Page.enable")
    browser.call("Page.navigate", url=run.url)
    shots: dict[str, bytes] = {}
    while run.proc.poll() is None and len(shots) < 2:
        emotion = browser.evaluate("document.body.dataset.emotion")
        if emotion in ("sad", "happy") and emotion not in shots:
            time.sleep(0.6)
            shots[emotion] = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
        time.sleep(POLL_S)
    run.finish()
    assert set(shots) == {"sad", "happy"}, "the page did not show both emotions"
    assert browser.evaluate("getComputedStyle(document.body).backgroundColor") != "rgba(0, 0, 0, 0)"
    assert shots["sad"] != shots["happy"]
    target = os.environ.get(SCREENSHOT_ENV)
    if target:
        import io

        import matplotlib.image as mpimg

        images = [mpimg.imread(io.BytesIO(shots[e]), format="png") for e in ("sad", "happy")]
        mpimg.imsave(target, np.concatenate(images, axis=0))


# ------------------------------------------------------------------ every output on, every receiver absent


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _timed_listen(args: list[str], env: dict) -> tuple[list[dict], str, float]:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run([sys.executable, "-m", "realtime_ser", "listen", *args], capture_output=True, text=True,
                       timeout=TIMEOUT_S, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert r.returncode == 0, r.stderr
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return [json.loads(line) for line in r.stdout.splitlines()], r.stderr, cpu


@pytest.mark.slow
def test_absent_receivers_change_no_event_and_no_latency(tiny_model_path, sad_happy_wav, tmp_path):
    """A realtime replay twice: alone, then with --osc (vmc), --vts and --serve all on, nobody listening
    on the OSC port, nothing on the VTS port, no client on the server, and the dashboard forced on.
    The events are the same (latency aside), nothing is skipped or dropped; the latencies and the
    CPU time of both runs are printed (a benchmark's figures, not a timed assertion)."""
    env = {**os.environ, "REALTIME_SER_CONFIG_DIR": str(tmp_path)}
    base = ["--replay", str(sad_happy_wav), "--pace", "realtime", "--model", str(tiny_model_path),
            "--status-every", "2"]
    alone, _, cpu_alone = _timed_listen(base + ["--no-dashboard"], env)
    osc_port, vts_port = _free_port(socket.SOCK_DGRAM), _free_port(socket.SOCK_STREAM)
    loaded, err, cpu_loaded = _timed_listen(base + ["--dashboard", "--osc", f"127.0.0.1:{osc_port}", "--osc-preset",
                                                    "vmc", "--vts", f"ws://127.0.0.1:{vts_port}",
                                                    "--serve", "127.0.0.1:0"], env)
    assert "VTube Studio" in err and "retrying" in err  # said once, then quiet
    assert len([line for line in err.splitlines() if "retrying" in line]) == 1

    def content(events):
        return [{k: v for k, v in e.items() if k not in ("latency_ms", "outputs", "queue_depth", "callback_max_ms")}
                for e in events if e["type"] in ("prediction", "change", "status", "end")]

    assert content(loaded) == content(alone)
    for events in (alone, loaded):
        assert events[-1]["skipped_windows"] == 0 and events[-1]["dropped_blocks"] == 0
    status = [e for e in loaded if e["type"] == "status"]
    assert status and all(e["outputs"]["osc"]["dropped"] == 0 and e["outputs"]["vts"]["dropped"] == 0 for e in status)
    assert status[-1]["outputs"]["vts"]["connected"] is False

    def lat(events):
        values = sorted(e["latency_ms"] for e in events if e["type"] == "prediction" and e["latency_ms"] is not None)
        return values[len(values) // 2], values[-1]

    (med_a, max_a), (med_l, max_l) = lat(alone), lat(loaded)
    print(f"\nwindow latency, median / max: alone {med_a:.1f} / {max_a:.1f} ms, every output on with absent "
          f"receivers (+ dashboard) {med_l:.1f} / {max_l:.1f} ms; CPU {cpu_alone:.2f} s vs {cpu_loaded:.2f} s "
          f"for {alone[-1]['t']:.1f} s of audio")
