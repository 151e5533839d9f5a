"""The in-process device: a `LoadedModels` set whose pipeline calls run on the executor's own thread.

Used by tests and tools, with `SDQ_DEVICE_PROCESS=false`, and by the device process itself (`child.py`) on its side
of the pipe.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from producer.jobs import JobRequest

from ..checkpoint import DenoiseTap, Snapshot
from ..conditioning import PreparedInputs
from ..inference import StepCallback, generate_batch, prompt_truncation_warning
from .base import Rendered, Session

if TYPE_CHECKING:
    from producer.holdings import Holdings

    from ..lora import LoraLike
    from ..models import LoadedModels


class LocalSession:
    """A pipeline of this process; `generate` runs on the calling thread."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self._tap: DenoiseTap | None = None

    def generate(
        self,
        requests: Sequence[JobRequest],
        on_step: StepCallback,
        *,
        resume: Snapshot | None = None,
        inputs: Sequence[PreparedInputs | None] = (),
    ) -> Rendered:
        warnings = [prompt_truncation_warning(self.pipe, request.prompt) for request in requests]
        self._tap = DenoiseTap(resume=resume)
        try:
            images = generate_batch(self.pipe, requests, on_step=on_step, tap=self._tap, inputs=inputs or None)
            return images, warnings
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

    def holdings(self) -> Holdings:
        return self.models.holdings()

    def close(self) -> None:
        self.models.close()
