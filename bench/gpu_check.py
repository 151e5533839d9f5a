"""The one prepared GPU check (`make gpu-check`): every GPU figure sdqueue has, in one call of at most 9 minutes.

    python3 -m bench.gpu_check [--out DIR] [--budget-s 510] [--wheels .whl]

Without CUDA (no torch, or no device) it writes one line `{"gpu_check": "skipped", "reason": "no CUDA ..."}` and
exits 0. With CUDA it installs the wheels `make gpu-wheels` left in `--wheels` into a private target folder (the
machine has torch and no diffusers; nothing can be downloaded there), then runs, each step a subprocess with its
own time cap and never past the overall budget:

1. the `gpu`-marked tests;
2. `bench.gpu` for SD 1.5 (512², 50 steps), then SDXL (1024², 30 steps): batch 1 and 8, plain diffusers against
   sdqueue's path, each family in its dtype (fp16), no compile;
3. `bench.worker` with the SD 1.5 architecture at 512² through the whole system (API, Redis, worker, storage);
4. `bench.load` on CUDA for SD 1.5 (device_map against from_pretrained + `.to`);
5. `bench.gpu --compile` for SD 1.5, then SDXL: compile last, as it is the slowest and least certain.

Every JSON line a step prints is appended at once to `DIR/gpu-check.jsonl` with the step's name, then a line with
the step's exit status and seconds, so a timeout loses only the step it cut short.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "gpu-check.jsonl"


def cuda_status() -> str | None:
    """None when torch sees a CUDA device, else why not."""
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no CUDA: could not ask torch ({exc})"
    if done.returncode == 3:
        return "no CUDA: torch sees no CUDA device on this machine"
    if done.returncode != 0:
        return f"no CUDA: torch is not importable ({done.stderr.strip().splitlines()[-1:]})"
    return None


class Check:
    """Runs steps against one deadline and appends what they print to the results file."""

    def __init__(self, out: Path, budget_s: float, env: dict[str, str]) -> None:
        self.out = out
        self.results = out / RESULTS
        self.deadline = time.monotonic() + budget_s
        self.env = env

    def write(self, line: dict[str, Any]) -> None:
        with open(self.results, "a", encoding="utf-8") as results:
            results.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)

    def step(self, name: str, argv: list[str], cap_s: float) -> int | None:
        """Run `argv` for at most `cap_s` (and never past the deadline); None when there was no time left."""
        left = self.deadline - time.monotonic()
        if left < 20:
            self.write({"step": name, "skipped": f"no time left ({left:.0f} s of the budget)"})
            return None
        limit = min(cap_s, left)
        started = time.monotonic()
        log = self.out / f"{name}.log"
        with open(log, "w", encoding="utf-8") as stderr:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True
            )
            assert process.stdout is not None
            timed_out = False
            try:
                for raw in _lines_until(process, started + limit):
                    line = raw.strip()
                    if line.startswith("{"):
                        with contextlib.suppress(ValueError):  # a line that only looks like JSON: in the log
                            self.write({"step": name, **json.loads(line)})
            except TimeoutError:
                timed_out = True
                os.killpg(process.pid, 9)
            rc = process.wait()
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-12:]
        self.write(
            {
                "step": name,
                "rc": rc,
                "timed_out": timed_out,
                "seconds": round(time.monotonic() - started, 1),
                "limit_s": round(limit),
                **({"log_tail": tail} if rc != 0 else {}),
            }
        )
        return rc


def _lines_until(process: subprocess.Popen[str], deadline: float) -> Any:
    """The process's stdout lines, raising TimeoutError once `deadline` passes (checked at least every second)."""
    import selectors

    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError
        if not selector.select(timeout=1.0):
            if process.poll() is not None:
                return
            continue
        line = process.stdout.readline()
        if not line:
            return
        yield line


def install_wheels(wheels: Path, site: Path) -> str | None:
    """Install every wheel in `wheels` into `site`; None on success, else the error."""
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    if not files:
        return f"no wheels in {wheels}: run `make gpu-wheels` where PyPI is reachable, and carry .whl"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir"]
    done = subprocess.run([*pip, "--upgrade", "--target", str(site), *files], capture_output=True, text=True)
    return None if done.returncode == 0 else done.stderr.strip()[-2000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "gpu-check-out"))
    parser.add_argument("--budget-s", type=float, default=510.0, help="the whole check's time, installs included")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl")
    args = parser.parse_args()
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    reason = cuda_status()
    if reason is not None:
        line = {"gpu_check": "skipped", "reason": reason, "python": sys.version.split()[0]}
        (args.out / RESULTS).write_text(json.dumps(line) + "\n", encoding="utf-8")
        print(json.dumps(line))
        return 0
    site = Path(tempfile.gettempdir()) / "sdq-gpu-site"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(site)]),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
    }
    check = Check(args.out, args.budget_s - (time.monotonic() - started), env)
    error = install_wheels(args.wheels, site)
    check.write({"step": "install", "ok": error is None, **({"error": error} if error else {})})
    if error is not None:
        return 1
    py = sys.executable
    check.step("info", [py, "-c", _INFO], 30)
    check.step("gpu-tests", [py, "-m", "pytest", "-q", "-m", "gpu", "tests/gpu", "-p", "no:cacheprovider"], 100)
    check.step("gpu-sd15", [py, "-m", "bench.gpu", "--models", "sd15", "--repeats", "2"], 110)
    check.step("gpu-sdxl", [py, "-m", "bench.gpu", "--models", "sdxl", "--repeats", "2"], 150)
    models = Path(tempfile.gettempdir()) / "sdq-gpu-models"
    worker = [py, "-m", "bench.worker", "--model", "sd15", "--model-dir", str(models), "--device", "cuda"]
    worker += ["--size", "512", "--steps", "30", "--jobs", "48", "--rounds", "2", "--batch", "8", "--batch-sizes", "8"]
    check.step("worker-sd15", [*worker, "--storage", "local", "--skip-switch", "--torch-threads", "4"], 150)
    check.step(
        "load-sd15", [py, "-m", "bench.load", "--models", "sd15", "--cache-dir", str(models), "--device", "cuda"], 70
    )
    check.step("gpu-sd15-compile", [py, "-m", "bench.gpu", "--models", "sd15", "--repeats", "2", "--compile"], 200)
    check.step("gpu-sdxl-compile", [py, "-m", "bench.gpu", "--models", "sdxl", "--repeats", "2", "--compile"], 300)
    check.write({"gpu_check": "done", "seconds": round(time.monotonic() - started, 1)})
    return 0


_INFO = """
import json, torch, diffusers, transformers
p = torch.cuda.get_device_properties(0)
print(json.dumps({"device": p.name, "sm": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1),
                  "torch": torch.__version__, "cuda": torch.version.cuda, "diffusers": diffusers.__version__,
                  "transformers": transformers.__version__}))
"""


if __name__ == "__main__":
    sys.exit(main())
