"""Shared test fixtures. Each section is owned by one part of the suite; add sections, don't rewrite others."""

from __future__ import annotations

# ---------------------------------------------------------------------------------------------
# Live and corpus tests: the PulseAudio virtual microphone and ../shared/data.
#
# Tests marked ``live`` get a running virtual microphone (a PulseAudio null sink "vmic" whose
# monitor is the default source; see scripts/vmic.sh). If none is reachable, one is started on a
# private runtime directory for this test session and stopped at its end. Tests marked ``corpus``
# need ../shared/data. Outside CI a missing microphone or corpus skips with the reason; with
# CI set (CI=true), it fails: CI must run these tests, never silently skip them.
# ---------------------------------------------------------------------------------------------
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# the corpora: $REALTIME_SER_DATA (as train/ resolves it), else ../shared/data beside the checkout
SHARED_DATA = Path(os.environ.get("REALTIME_SER_DATA") or REPO_ROOT.parent / "shared" / "data")
VMIC_SCRIPT = REPO_ROOT / "scripts" / "vmic.sh"
VMIC_SINK = "vmic"
VMIC_START_TIMEOUT_S = 30
VMIC_PRIVATE_EXIT_IDLE_S = 120  # a private server exits this long after its last client (no leaks)
PACTL_TIMEOUT_S = 5


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip outside CI; fail in CI, where every test must really run."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def _vmic_ready() -> bool:
    """True when a PulseAudio server answers and has the vmic sink."""
    try:
        result = subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True,
                                timeout=PACTL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and any(
        line.split("\t")[1:2] == [VMIC_SINK] for line in result.stdout.splitlines())


@dataclass(frozen=True)
class VirtualMic:
    """A running virtual microphone: play into ``sink``, record from ``source`` (or PortAudio "pulse")."""

    sink: str
    source: str
    started_here: bool

    def play(self, path: Path, timeout_s: float) -> None:
        """Play a sound file into the microphone at real-time pace; returns when playback ends."""
        subprocess.run(["paplay", f"--device={self.sink}", str(path)], check=True, timeout=timeout_s)


_private_env: dict[str, str] = {}  # the environment the private server was started with, to restart it


@pytest.fixture(scope="session")
def _virtual_mic_session() -> Iterator[VirtualMic | str]:
    """Start a private virtual microphone if none is reachable; yields it, or why there is none."""
    if _vmic_ready():
        yield VirtualMic(VMIC_SINK, f"{VMIC_SINK}.monitor", started_here=False)
        return
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    if missing:
        yield (f"no PulseAudio virtual microphone reachable and {', '.join(missing)} not installed "
               "(apt-get install pulseaudio pulseaudio-utils libasound2-plugins, or run bash .ci/run)")
        return
    runtime = tempfile.mkdtemp(prefix="realtime-ser-pulse-")
    saved = {name: os.environ.get(name) for name in ("PULSE_RUNTIME_PATH", "PULSE_SERVER")}
    os.environ["PULSE_RUNTIME_PATH"] = runtime  # this process and every child reach the private server
    os.environ.pop("PULSE_SERVER", None)
    env = dict(os.environ, VMIC_LOG=str(Path(runtime) / "pulseaudio.log"),
               VMIC_EXIT_IDLE_S=str(VMIC_PRIVATE_EXIT_IDLE_S))
    _private_env.update(env)
    try:
        result = subprocess.run(["bash", str(VMIC_SCRIPT), "start"], capture_output=True, text=True,
                                env=env, timeout=VMIC_START_TIMEOUT_S)
        if result.returncode != 0 or not _vmic_ready():
            yield f"could not start the PulseAudio virtual microphone: {result.stderr.strip()}"
            return
        yield VirtualMic(VMIC_SINK, f"{VMIC_SINK}.monitor", started_here=True)
    finally:
        subprocess.run(["bash", str(VMIC_SCRIPT), "stop"], capture_output=True, env=env,
                       timeout=VMIC_START_TIMEOUT_S)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.fixture
def virtual_mic(_virtual_mic_session: VirtualMic | str) -> VirtualMic:
    """The running virtual microphone (checked again per test: a fault test may have killed it)."""
    if isinstance(_virtual_mic_session, str):
        skip_or_fail(_virtual_mic_session)
    if not _vmic_ready():
        result = subprocess.run(["bash", str(VMIC_SCRIPT), "start"], capture_output=True, text=True,
                                env=_private_env or None, timeout=VMIC_START_TIMEOUT_S)
        if result.returncode != 0:
            skip_or_fail(f"the PulseAudio virtual microphone went away and did not restart: {result.stderr}")
    return _virtual_mic_session


@pytest.fixture
def shared_data_dir() -> Path:
    """The emotional speech corpora: $REALTIME_SER_DATA, else ../shared/data."""
    if not SHARED_DATA.is_dir():
        skip_or_fail(f"needs the corpora at {SHARED_DATA} (a checkout with ../shared beside it)")
    return SHARED_DATA


@pytest.fixture
def missing():
    """``missing(reason)``: skip the test outside CI, fail it in CI (for prerequisites found at run time)."""
    return skip_or_fail


@pytest.fixture(autouse=True)
def _markers_need_their_resources(request: pytest.FixtureRequest) -> None:
    """``live`` tests get the virtual microphone and ``corpus`` tests the corpora, or skip/fail."""
    if request.node.get_closest_marker("corpus") is not None:
        request.getfixturevalue("shared_data_dir")
    if request.node.get_closest_marker("live") is not None:
        request.getfixturevalue("virtual_mic")


# ---------------------------------------------------------------------------------------------
# Runtime tests: a tiny real ONNX model with its card (tests/helpers.py builds it), built once.
# ``tiny_model_path``: a pitch classifier (low voice -> sad, middle -> neutral, high -> happy);
# ``tiny_model``: it loaded; ``normalized_model_path``: the same with an online_speaker block.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import build_model

    return build_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def tiny_model(tiny_model_path: Path):
    from realtime_ser.model import Model

    return Model.load(tiny_model_path)


@pytest.fixture(scope="session")
def normalized_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import build_model

    return build_model(tmp_path_factory.mktemp("model_norm"), normalization="online_speaker", name="tiny_norm")


# ---------------------------------------------------------------------------------------------
# Training tests (tests/test_train.py): the data root as train/ resolves it ($REALTIME_SER_DATA,
# else ../shared/data); missing, it skips with the reason (fails in CI, like ``corpus``).
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def data_root() -> Path:
    """The corpora's data root for ``corpus`` training tests."""
    from train.data import DataError, resolve_data_root

    try:
        return resolve_data_root(None)
    except DataError as e:
        skip_or_fail(f"needs the corpora: {e}")


# ---------------------------------------------------------------------------------------------
# Live measurements: tests put name -> value into ``live_measurements``; the run's summary prints them.
# ---------------------------------------------------------------------------------------------

_LIVE_MEASUREMENTS = pytest.StashKey[dict]()


@pytest.fixture
def live_measurements(request: pytest.FixtureRequest) -> dict:
    """Name -> value; printed in a "live measurements" section at the end of the test run."""
    return request.config.stash.setdefault(_LIVE_MEASUREMENTS, {})


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    measurements = config.stash.get(_LIVE_MEASUREMENTS, {})
    if measurements:
        terminalreporter.write_sep("-", "live measurements")
        for name, value in measurements.items():
            terminalreporter.write_line(f"{name}: {value}")
    over = config.stash.get(_FAST_OVER_BUDGET, {})
    if over:
        terminalreporter.write_sep("-", f"fast-lane tests over {FAST_TEST_BUDGET_S:g} s: mark them @pytest.mark.slow "
                                        "(CPU: this process and its finished children; a busy machine inflates wall)")
        for nodeid, (wall, cpu) in sorted(over.items(), key=lambda kv: -kv[1][0]):
            terminalreporter.write_line(f"{wall:6.1f} s wall {cpu:6.1f} s CPU  {nodeid}")


# ---------------------------------------------------------------------------------------------
# Lanes (docs/testing.md): a test is in the slow lane when it is marked ``slow``, ``live`` or
# ``corpus``, and in the fast lane otherwise (it gets the ``fast`` marker automatically, so a new
# test is fast unless marked). ``pytest --lane fast|slow`` runs one lane, ``--lane all`` (the
# default) both. A fast-lane test whose call takes longer than FAST_TEST_BUDGET_S (wall clock) is
# listed at the end of the run with its CPU time, to be marked slow.
# ---------------------------------------------------------------------------------------------

SLOW_LANE_MARKERS = ("slow", "live", "corpus")
LANES = ("all", "fast", "slow")
FAST_TEST_BUDGET_S = 10.0  # wall: several times the slowest fast test on a quiet machine (2.5 s)
_FAST_OVER_BUDGET = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--lane", choices=LANES, default="all",
                     help="fast: tests not marked slow, live or corpus; slow: those; all (default): both")


def in_slow_lane(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(name) is not None for name in SLOW_LANE_MARKERS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if not in_slow_lane(item):
            item.add_marker(pytest.mark.fast)
    lane = config.getoption("lane")
    if lane == "all":
        return
    keep = [item for item in items if in_slow_lane(item) == (lane == "slow")]
    dropped = [item for item in items if in_slow_lane(item) != (lane == "slow")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    start_wall, start_cpu = time.perf_counter(), _cpu_s()
    yield
    wall = time.perf_counter() - start_wall
    if wall > FAST_TEST_BUDGET_S and item.get_closest_marker("fast") is not None:
        _over_budget[item.nodeid] = (wall, _cpu_s() - start_cpu)


_over_budget: dict[str, tuple[float, float]] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FAST_OVER_BUDGET] = _over_budget
