"""What the GPU executor runs its cohorts on: the `Device` and `Session` protocols.

The executor forms cohorts, claims jobs and runs every job's step callback; a *device* only loads models and makes
pipeline calls. `gpu_worker.device.local.LocalDevice` does that on the executor's own thread (tests, tools,
`SDQ_DEVICE_PROCESS=false`); `gpu_worker.device.process.DeviceProcess` does it in a child process whose interpreter
does nothing else, so the worker's other threads (uploads, Redis, Dramatiq) never take the GIL from the denoising
loop.

A `session` holds one model (with its LoRA set) for a cohort. `generate` renders the cohort and returns each job's
images and prompt warnings; `on_step(done, total)` is called after every denoising step and whatever it raises stops
the call (the device process stops at its next step). Inside `on_step`, `capture(rows)` takes a checkpoint of those
image rows for a spot hand-off.

Light at import (the protocols name their torch-side types only for type checkers), so that the device process's
parent side can use them before the worker imports torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:
    from producer.holdings import Holdings
    from producer.jobs import JobRequest

    from ..checkpoint import Snapshot
    from ..conditioning import PreparedInputs
    from ..inference import StepCallback
    from ..lora import LoraLike

#: Each job's images, and each job's prompt warning (None: nothing to say).
Rendered: TypeAlias = tuple[list[list[Any]], list[str | None]]


class Session(Protocol):
    """One model held for a cohort (see the module doc)."""

    def generate(
        self,
        requests: Sequence[JobRequest],
        on_step: StepCallback,
        *,
        resume: Snapshot | None = None,
        inputs: Sequence[PreparedInputs | None] = (),
    ) -> Rendered:
        """Render `requests` in one pipeline call, calling `on_step` after every step; resume from `resume`.
        `inputs` holds each request's image inputs (empty: none)."""
        ...

    def capture(self, rows: slice) -> Snapshot:
        """Inside `on_step`: a checkpoint of image `rows` of the running call."""
        ...


class Device(Protocol):
    """Loads models and runs pipeline calls for one GPU executor."""

    #: Where the pipelines run (`cpu`, `cuda:0`, ...), for logs.
    name: str

    def ready(self) -> None:
        """Block until the device can take cohorts, its preloaded models loaded; raises what preloading raised."""
        ...

    def session(self, model: str, *, loras: Iterable[LoraLike] = ()) -> AbstractContextManager[tuple[Session, float]]:
        """Hold `model` with exactly `loras` active; yields (session, seconds spent loading: 0 when hot)."""
        ...

    def holdings(self) -> Holdings:
        """What the device holds, as last known (never waits for a running cohort): for `GET /v1/models`."""
        ...

    def close(self) -> None:
        """Unload everything; the device takes no more sessions."""
        ...
