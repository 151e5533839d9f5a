"""A SIGKILLed worker takes its device process along within 1 s, whatever the child is doing: booting (importing
torch), loading a model, denoising, or idle. The worker here is a real process running the real `DeviceProcess`
parent, killed with SIGKILL; the child is the real spawned device process with the real tiny pipeline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")

# The worker side: start the device process, bring the child to `phase`, say so, then wait to be killed.
WORKER = """
import logging, sys, time
from pathlib import Path
from gpu_worker.device import DeviceProcess
from gpu_worker.settings import WorkerSettings
from producer.jobs import JobRequest

phase, cache = sys.argv[1], Path(sys.argv[2])

def say(*words):
    print(*words, flush=True)

settings = WorkerSettings(device="cpu", model_cache_dir=cache, preload_models=[], torch_threads=1)
device = DeviceProcess(settings, log_level=logging.INFO)
say("child", device.pid)
if phase == "booting":
    say("phase", phase)
    time.sleep(600)
device.ready()
if phase in ("idle", "loading"):
    say("phase", phase)  # for `loading`, the load starts now and the kill comes while it runs
    if phase == "idle":
        time.sleep(600)
with device.session("tiny") as (session, _):
    say("loaded")
    request = JobRequest(prompt="x", model="tiny", width=128, height=128, steps=150, seed=1)
    first = []

    def on_step(done, total):
        if not first:
            first.append(done)
            say("phase", "denoising")

    session.generate([request], on_step)
    say("denoised")
"""


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for a reaper that may never come does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("phase", ["booting", "loading", "denoising", "idle"])
def test_a_killed_worker_leaves_no_device_process_behind(phase: str, model_cache: Path, tmp_path: Path) -> None:
    logs = tmp_path / "worker.log"
    with logs.open("wb") as err:
        worker = subprocess.Popen(
            [sys.executable, "-c", WORKER, phase, str(model_cache)],
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    child = None
    try:
        assert worker.stdout is not None
        deadline = time.monotonic() + 120
        for raw in worker.stdout:
            words = raw.decode().split()
            if words[:1] == ["child"]:
                child = int(words[1])
            if words == ["phase", phase]:
                break
            assert time.monotonic() < deadline, f"the worker never reached {phase}"
        else:
            pytest.fail(f"the worker exited before {phase}: {logs.read_text()[-2000:]}")
        assert child is not None and _alive(child)
        if phase == "loading":
            time.sleep(0.05)  # the `use` message is on its way; the load itself takes longer than this
        os.kill(worker.pid, signal.SIGKILL)
        killed = time.monotonic()
        worker.wait(timeout=10)
        while _alive(child) and time.monotonic() - killed < 5:
            time.sleep(0.01)
        gone_s = time.monotonic() - killed
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)
    log = logs.read_text()
    print(f"{phase}: device process {child} gone {gone_s * 1000:.0f} ms after the worker's SIGKILL")
    assert gone_s < 1.0, f"the device process outlived its worker by {gone_s:.2f} s while {phase}"
    if phase == "loading":
        assert "loaded tiny" not in log  # the kill did land while the model was loading
    if phase == "denoising":
        assert "denoised" not in log


@pytest.mark.redis
def test_a_killed_sdq_worker_leaves_no_booting_device_process(
    redis_server: str, model_cache: Path, tmp_path: Path
) -> None:
    # The real command: multiprocessing would re-run its console script (importing producer.cli, seconds) in the
    # child before the child could ask to die with its parent.
    sdq = Path(sys.executable).parent / "sdq"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "SDQ_REDIS_URL": redis_server,
        "SDQ_DATA_DIR": str(tmp_path / "data"),
        "SDQ_MODEL_CACHE_DIR": str(model_cache),
        "SDQ_DEVICE": "cpu",
    }
    logs = tmp_path / "worker.log"
    with logs.open("wb") as err:
        worker = subprocess.Popen([str(sdq), "worker"], stdout=subprocess.DEVNULL, stderr=err, env=env)
    child = None
    try:
        deadline = time.monotonic() + 120
        while child is None:
            assert time.monotonic() < deadline and worker.poll() is None, logs.read_text()[-2000:]
            found = [w for w in logs.read_text().split("device process ")[1:] if w.split()[1:2] == ["starting"]]
            child = int(found[0].split()[0]) if found else None
            time.sleep(0.01)
        time.sleep(0.3)  # inside the child's start: its interpreter and first imports
        os.kill(worker.pid, signal.SIGKILL)
        killed = time.monotonic()
        worker.wait(timeout=10)
        while _alive(child) and time.monotonic() - killed < 5:
            time.sleep(0.01)
        gone_s = time.monotonic() - killed
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)
    print(f"sdq worker booting: device process {child} gone {gone_s * 1000:.0f} ms after the worker's SIGKILL")
    assert gone_s < 1.0, f"the device process outlived `sdq worker` by {gone_s:.2f} s"
