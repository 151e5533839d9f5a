"""The messages between the worker process and its device process, one frozen dataclass each.

Over one `multiprocessing` pipe, driven by the executor's thread (one request at a time):

    parent                          child
    Use(model, loras)           ->  Loaded(load_s) | Failed(error)
    Generate(requests, resume,
             inputs)            ->  Step(done, total)*  then  Generated(images, warnings) | Failed(error)
      Stop()                    ->  (read at the child's next step end: the call stops, Failed(<stopped>))
      Capture(rows)             ->  Captured(snapshot) | CaptureFailed(error), at the child's next step end
    Release()                   ->  (no answer)
    Close()                     ->  Closed(), then the child exits

The child also speaks first: `Ready(device)` once it has booted, or `Failed(error)` if it could not.

Step events flow without waiting: the child never stops for the parent, which runs each job's step callback as the
events arrive (a step or so behind) and answers with `Stop` or `Capture` when a job wants out. A `Stop` or
`Capture` that reaches the child after its call ended is ignored; the parent has seen the end by then.

Messages are pickled by `Connection.send`, that is by multiprocessing's `ForkingPickler`, for which torch registers
its tensor reductions: the tensors of a `Snapshot` (in `Captured` and `Generate.resume`) cross the pipe through
shared memory, not as bytes. A job's image inputs (`gpu_worker.conditioning.PreparedInputs`) cross as PIL images,
which pickle as their raw pixels (no PNG encoding): about 3 MB and a few milliseconds for 1024² RGB. Exceptions
cross as themselves when they pickle (`child.sendable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:  # never at run time: the worker process spawns the child before it imports torch (see cli.py)
    from producer.holdings import Holdings
    from producer.jobs import JobRequest

    from ..checkpoint import Snapshot
    from ..conditioning import PreparedInputs
    from ..errors import CheckpointError
    from ..lora import LoraLike

# --- parent -> child ---


@dataclass(frozen=True)
class Use:
    """Hold `model` with exactly `loras` active until `Release`."""

    model: str
    loras: tuple[LoraLike, ...] = ()


@dataclass(frozen=True)
class Generate:
    """Render `requests` in one pipeline call of the held model, resuming from `resume` when given; `inputs` holds
    each request's image inputs (empty: none)."""

    requests: tuple[JobRequest, ...]
    resume: Snapshot | None = None
    inputs: tuple[PreparedInputs | None, ...] = ()


@dataclass(frozen=True)
class Stop:
    """Stop the running call at its next step end: every job in it has stopped."""


@dataclass(frozen=True)
class Capture:
    """Checkpoint image `rows` of the running call at its next step end."""

    rows: slice


@dataclass(frozen=True)
class Release:
    """Let go of the held model (it stays loaded, as the model set decides)."""


@dataclass(frozen=True)
class Close:
    """Unload everything and exit."""


#: Every message the parent sends.
ToChild: TypeAlias = Use | Generate | Stop | Capture | Release | Close

# --- child -> parent ---


@dataclass(frozen=True)
class Ready:
    """The child has imported torch and loaded its preloaded models on `device` (`cpu`, `cuda:0`, ...), and holds
    `holdings` (None: not said)."""

    device: str
    holdings: Holdings | None = None


@dataclass(frozen=True)
class Loaded:
    """The answer to `Use`: the model is held; `load_s` is the time spent loading it (0 when it was hot); the
    device then holds `holdings`."""

    load_s: float
    holdings: Holdings | None = None


@dataclass(frozen=True)
class Step:
    """`done` of `total` denoising steps of the running call are done."""

    done: int
    total: int


@dataclass(frozen=True)
class Captured:
    """The answer to `Capture`."""

    snapshot: Snapshot


@dataclass(frozen=True)
class CaptureFailed:
    """The answer to a `Capture` that could not be taken."""

    error: CheckpointError


@dataclass(frozen=True)
class Generated:
    """The answer to `Generate`: each job's images, and each job's prompt warning (None: nothing to say)."""

    images: list[list[Any]]
    warnings: list[str | None]


@dataclass(frozen=True)
class Failed:
    """The request (boot, `Use` or `Generate`) raised `error`."""

    error: BaseException


@dataclass(frozen=True)
class Closed:
    """The answer to `Close`: everything is unloaded, the child exits."""


#: The messages that end a request.
Answer: TypeAlias = Ready | Loaded | Generated | Failed | Closed
#: Every message the child sends.
FromChild: TypeAlias = Step | Captured | CaptureFailed | Answer
