"""The device-process messages: frozen dataclasses that survive the pipe's pickling, one type per message."""

from __future__ import annotations

import dataclasses
import pickle
import typing
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler

import pytest
from PIL import Image

from gpu_worker.device import protocol
from gpu_worker.device.protocol import (
    Capture,
    Captured,
    CaptureFailed,
    Close,
    Closed,
    Failed,
    FromChild,
    Generate,
    Generated,
    Loaded,
    Ready,
    Release,
    Step,
    Stop,
    ToChild,
    Use,
)
from gpu_worker.errors import CheckpointError, ModelNotFoundError
from gpu_worker.lora import LoraSpec
from producer.holdings import Holdings
from producer.jobs import JobRequest

MakeJob = Callable[..., JobRequest]


def _messages(job: MakeJob) -> list[ToChild | FromChild]:
    """One of every message but `Captured` (its snapshot crosses the real pipe in test_device_process.py)."""
    return [
        Use("tiny", (LoraSpec("style", scale=0.5),)),
        Generate((job(seed=1), job(seed=2, num_images=2))),
        Stop(),
        Capture(slice(1, 3)),
        Release(),
        Close(),
        Ready("cpu"),
        Ready("cpu", Holdings(("tiny",), ("tiny", "org/model"))),
        Loaded(1.5),
        Loaded(0.0, Holdings(("tiny",), ("tiny",))),
        Step(3, 8),
        CaptureFailed(CheckpointError("the call ended")),
        Generated([[Image.new("RGB", (8, 8), "red")]], ["prompt truncated", None]),
        Failed(ModelNotFoundError("no model at /nowhere")),
        Closed(),
    ]


def test_every_message_type_is_a_frozen_dataclass_in_one_of_the_two_unions() -> None:
    to_child, from_child = set(typing.get_args(ToChild)), set(typing.get_args(FromChild))
    assert to_child == {Use, Generate, Stop, Capture, Release, Close}
    assert from_child == {Ready, Loaded, Step, Captured, CaptureFailed, Generated, Failed, Closed}
    defined = {value for value in vars(protocol).values() if dataclasses.is_dataclass(value)}
    assert defined == to_child | from_child  # no message outside the unions
    for kind in defined:
        assert kind.__dataclass_params__.frozen, kind  # type: ignore[attr-defined]


def test_a_message_cannot_be_changed_once_made() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Step(1, 2).done = 2  # type: ignore[misc]


def test_every_message_survives_the_pipes_pickling(job: MakeJob) -> None:
    for message in _messages(job):
        # What `Connection.send` and `recv` do (ForkingPickler: torch's shared-memory tensor reductions included).
        received = pickle.loads(ForkingPickler.dumps(message))
        assert type(received) is type(message)
        if isinstance(message, Failed | CaptureFailed):  # exceptions compare by identity: compare what they carry
            assert type(received.error) is type(message.error) and received.error.args == message.error.args
        else:
            assert received == message
