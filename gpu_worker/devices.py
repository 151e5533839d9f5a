"""What the GPU executor runs its batches on: a model set in this process, or one in a device process.

The executor forms batches, claims jobs and runs every job's step callback; a *device* only loads models and makes
pipeline calls. `LocalDevice` does that on the executor's own thread (tests, tools, `SDQ_DEVICE_PROCESS=false`);
`gpu_worker.device_process.DeviceProcess` does it in a child process whose interpreter does nothing else, so the
worker's other threads (uploads, Redis, Dramatiq) never take the GIL from the denoising loop.

A `session` holds one model (with its LoRA set) for a batch. `generate` renders the batch and returns each job's
images and prompt warnings; `on_step(done, total)` is called after every denoising step and whatever it raises stops
the call (the device process stops at its next step). Inside `on_step`, `capture(rows)` takes a checkpoint of those
image rows for a spot hand-off.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from producer.jobs import JobRequest

from .checkpoint import DenoiseTap, Snapshot
from .inference import StepCallback, generate_batch, prompt_truncation_warning

if TYPE_CHECKING:
    from .lora import LoraLike
    from .models import LoadedModels

#: Each job's images, and each job's prompt warning (None: nothing to say).
Rendered = tuple[list[list[Any]], list[str | None]]


class Session(Protocol):
    """One model held for a batch (see the module doc)."""

    def generate(self, requests: Sequence[JobRequest], on_step: StepCallback, *, resume: Any = None) -> Rendered: ...

    def capture(self, rows: slice) -> Snapshot: ...


class Device(Protocol):
    """Loads models and runs pipeline calls for one GPU executor."""

    #: Where the pipelines run (`cpu`, `cuda:0`, ...), for logs.
    name: str

    def ready(self) -> None:
        """Block until the device can take batches, its preloaded models loaded; raises what preloading raised."""
        ...

    def session(self, model: str, *, loras: Iterable[LoraLike] = ()) -> AbstractContextManager[tuple[Session, float]]:
        """Hold `model` with exactly `loras` active; yields (session, seconds spent loading: 0 when hot)."""
        ...

    def close(self) -> None:
        """Unload everything; the device takes no more sessions."""
        ...


class LocalSession:
    """A pipeline of this process; `generate` runs on the calling thread."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self._tap: DenoiseTap | None = None

    def generate(self, requests: Sequence[JobRequest], on_step: StepCallback, *, resume: Any = None) -> Rendered:
        warnings = [prompt_truncation_warning(self.pipe, request.prompt) for request in requests]
        self._tap = DenoiseTap(resume=resume)
        try:
            return generate_batch(self.pipe, requests, on_step=on_step, tap=self._tap), warnings
        finally:
            self._tap = None

    def capture(self, rows: slice) -> Snapshot:
        if self._tap is None:
            raise RuntimeError("capture() is only possible inside a step callback")
        return self._tap.capture(rows)


class LocalDevice:
    """A `LoadedModels` set used from the executor's own thread; `preload` lists the models `ready` loads."""

    def __init__(self, models: LoadedModels, *, preload: Iterable[str] = ()) -> None:
        self.models = models
        self.name = str(models.device)
        self._preload = list(preload)

    def ready(self) -> None:
        self.models.preload(self._preload)

    @contextmanager
    def session(self, model: str, *, loras: Iterable[LoraLike] = ()) -> Iterator[tuple[Session, float]]:
        with self.models.use(model, loras=loras) as (pipe, load_s):
            yield LocalSession(pipe), load_s

    def close(self) -> None:
        self.models.close()
