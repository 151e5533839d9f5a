"""Checkpointing a denoising run mid-way, and resuming it at the same step on another worker (spot interruptions).

A run's whole state between two denoising steps is: the latents, the scheduler's internal state (step index,
multistep history for DPM++/UniPC/PNDM, the last sample, ...) and each image's RNG state (ancestral samplers draw
fresh noise every step). Prompt embeddings and the timestep schedule are recomputed from the request, identically.

Resuming re-enters the pipeline's own loop: the steps before the checkpoint run with the denoiser (a UNet, or the
SD 3 / Flux transformer) replaced by a zero-output stub (cheap), and at the end of step k-1 a `callback_on_step_end`
swaps in the saved latents, the saved scheduler state and the saved generator states. From step k on the run is the
interrupted run, so the image matches an uninterrupted one (bit-exact on the same device; float noise across
devices). This works for every scheduler diffusers has, flow-matching ones included, because the scheduler's state
is captured generically (its tensor, list and number attributes). Generators are CPU generators on every device
(see `gpu_worker.inference`), so a CUDA worker resumes a CPU worker's checkpoint and the other way round; a state no
CPU generator takes (a checkpoint of an older worker's CUDA generators) is a `CheckpointError` before the run starts.

Checkpoints are loaded with `torch.load(weights_only=True)`: tensors, lists, dicts and numbers only, never code.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from .errors import CheckpointError
from .sources import first_line

#: Version of the checkpoint layout; a worker refuses (and restarts from step 0) a layout it does not know.
#: 2: generator states are always CPU generators' (format 1 held CUDA generators' on GPUs).
CHECKPOINT_FORMAT = 2
# Scheduler attributes that are configuration, not state (restored from the model's config anyway).
_NOT_STATE = frozenset({"config", "_internal_dict"})


@dataclass(frozen=True)
class Snapshot:
    """A run's state after `step` of `total` denoising steps, for some of the call's images (on the CPU)."""

    step: int
    total: int
    scheduler_class: str
    latents: torch.Tensor
    scheduler: dict[str, Any]
    generators: list[torch.Tensor]


def checkpoint_key(job_id: str, attempt: int) -> str:
    """Object key of the checkpoint that attempt `attempt` of `job_id` wrote."""
    return f"checkpoints/{job_id}/{attempt}.pt"


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """Serialize `snapshot` (tensors and plain data only)."""
    buffer = io.BytesIO()
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "step": snapshot.step,
            "total": snapshot.total,
            "scheduler_class": snapshot.scheduler_class,
            "latents": snapshot.latents,
            "scheduler": snapshot.scheduler,
            "generators": snapshot.generators,
        },
        buffer,
    )
    return buffer.getvalue()


def decode_snapshot(data: bytes) -> Snapshot:
    """Read a checkpoint written by `encode_snapshot`; raises `CheckpointError` for anything else."""
    try:
        raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if raw["format"] != CHECKPOINT_FORMAT:
            raise CheckpointError(f"checkpoint format {raw['format']} is not {CHECKPOINT_FORMAT}")
        return Snapshot(
            step=int(raw["step"]),
            total=int(raw["total"]),
            scheduler_class=str(raw["scheduler_class"]),
            latents=raw["latents"],
            scheduler=dict(raw["scheduler"]),
            generators=list(raw["generators"]),
        )
    except CheckpointError:
        raise
    except Exception as exc:  # a truncated upload, a foreign file: restarting beats failing the job
        raise CheckpointError(f"unreadable checkpoint: {type(exc).__name__}: {exc}") from exc


class DenoiseTap:
    """The checkpoint/resume hook of one pipeline call.

    `generate_batch` binds it to the pipeline and the call's generators, runs the call inside `running()` and calls
    `step_end` from its step callback. `rows` of `capture` pick one job's images out of a batched call. A tap made
    with `resume` must run a call with exactly the snapshot's images; `skipping(step_index)` tells which steps are
    replays (not reported as progress).
    """

    def __init__(self, *, resume: Snapshot | None = None) -> None:
        self.pipe: Any = None
        self.generators: list[torch.Generator] = []
        self.resume = resume if resume is not None and resume.step > 0 else None
        self._latents: torch.Tensor | None = None
        self._step = 0
        self._stubbed: Any = None
        self._replaced: Any = None

    def bind(self, pipe: Any, generators: Sequence[torch.Generator]) -> DenoiseTap:
        """Attach the tap to the call it will watch (the pipeline and one generator per image)."""
        self.pipe = pipe
        self.generators = list(generators)
        return self

    @property
    def step(self) -> int:
        """Denoising steps done so far (including those restored from the snapshot)."""
        return self._step

    def skipping(self, step_index: int) -> bool:
        """Whether step `step_index` (0-based) is a replay before the resume point (its output is discarded)."""
        return self.resume is not None and step_index < self.resume.step - 1

    @contextmanager
    def running(self) -> Iterator[DenoiseTap]:
        """Wrap the pipeline call: while replaying the steps before the resume point, the denoiser is a stub."""
        if self.resume is not None:
            if self.resume.scheduler_class != type(self.pipe.scheduler).__name__:
                raise CheckpointError(
                    f"checkpoint was taken with {self.resume.scheduler_class},"
                    f" this run uses {type(self.pipe.scheduler).__name__}"
                )
            if len(self.resume.generators) != len(self.generators):
                raise CheckpointError(
                    f"checkpoint holds {len(self.resume.generators)} image(s), not {len(self.generators)}"
                )
            for generator, state in zip(self.generators, self.resume.generators, strict=True):
                _check_generator_state(generator, state)
            self._stub_denoiser()
        try:
            yield self
        finally:
            self._unstub_denoiser()

    def step_end(self, step_index: int, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        """Record the latents after step `step_index`; at the resume point, swap in the saved state."""
        if self.resume is not None and step_index == self.resume.step - 1:
            latents = callback_kwargs["latents"]
            if tuple(latents.shape) != tuple(self.resume.latents.shape):
                raise CheckpointError(
                    f"checkpoint latents {tuple(self.resume.latents.shape)} != {tuple(latents.shape)}"
                )
            callback_kwargs["latents"] = self.resume.latents.to(device=latents.device, dtype=latents.dtype)
            _restore(self.pipe.scheduler, self.resume.scheduler, latents.device)
            for generator, state in zip(self.generators, self.resume.generators, strict=True):
                generator.set_state(state)
            self._unstub_denoiser()
        self._latents = callback_kwargs["latents"]
        self._step = step_index + 1
        return callback_kwargs

    def capture(self, rows: slice | None = None) -> Snapshot:
        """The state right after the last step, for the images in `rows` (all by default), copied to the CPU."""
        if self._latents is None or self._step == 0:
            raise CheckpointError("no denoising step has run yet: nothing to checkpoint")
        rows = rows or slice(None)
        full_shape = tuple(self._latents.shape)
        return Snapshot(
            step=self._step,
            total=int(getattr(self.pipe, "num_timesteps", 0) or 0),
            scheduler_class=type(self.pipe.scheduler).__name__,
            latents=self._latents[rows].detach().to("cpu", copy=True),
            scheduler=_capture(self.pipe.scheduler, full_shape, rows),
            generators=[g.get_state().clone() for g in self.generators[rows]],
        )

    def _stub_denoiser(self) -> None:
        if self._stubbed is not None:
            return
        denoiser, zeros = _zero_denoiser(self.pipe)
        if denoiser is None:
            return  # other denoisers replay for real: slower, equally correct (the state is swapped in anyway)

        # An instance attribute: nn.Module.__call__ finds it before the class's forward. torch.compile's wrapper keeps
        # its own compiled forward as an instance attribute too: remember it, to put it back.
        self._replaced = vars(denoiser).get("forward", _SKIP)
        denoiser.forward = zeros
        self._stubbed = denoiser

    def _unstub_denoiser(self) -> None:
        if self._stubbed is not None:
            if self._replaced is _SKIP:
                del self._stubbed.forward
            else:
                self._stubbed.forward = self._replaced
            self._stubbed = None


def _check_generator_state(generator: torch.Generator, state: Any) -> None:
    """Raise `CheckpointError` unless `state` is a state `generator`'s kind takes (set on a scratch generator)."""
    scratch = torch.Generator(device=generator.device)
    try:
        scratch.set_state(state)
    except (RuntimeError, TypeError) as exc:
        raise CheckpointError(
            f"checkpoint's generator state does not fit a {generator.device.type} generator ({first_line(exc)})"
        ) from exc


def _zero_denoiser(pipe: Any) -> tuple[Any, Any]:
    """The pipeline's denoiser and a forward that predicts zeros in its output shape; (None, None) if unknown."""
    unet = getattr(pipe, "unet", None)
    if unet is not None:
        out_channels = int(unet.config.out_channels)

        def unet_zeros(sample: torch.Tensor, *args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
            out = torch.zeros(
                (sample.shape[0], out_channels, *sample.shape[2:]), dtype=sample.dtype, device=sample.device
            )
            if return_dict:
                from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

                return UNet2DConditionOutput(sample=out)
            return (out,)

        return unet, unet_zeros
    transformer = getattr(pipe, "transformer", None)
    config = getattr(transformer, "config", None)
    if config is None or config.get("out_channels") not in (None, config.get("in_channels")):
        return None, None
    # SD 3 and Flux transformers predict a tensor shaped like their input (SD 3: B, C, H, W; Flux: B, tokens, C).

    def transformer_zeros(*args: Any, return_dict: bool = True, **kwargs: Any) -> Any:
        sample = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        out = torch.zeros_like(sample)
        if return_dict:
            from diffusers.models.modeling_outputs import Transformer2DModelOutput

            return Transformer2DModelOutput(sample=out)
        return (out,)

    return transformer, transformer_zeros


def _capture(scheduler: Any, sample_shape: tuple[int, ...], rows: slice) -> dict[str, Any]:
    state = {}
    for name, value in vars(scheduler).items():
        if name in _NOT_STATE:
            continue
        packed = _pack(value, sample_shape, rows)
        if packed is not _SKIP:
            state[name] = packed
    return state


_SKIP = object()


def _pack(value: Any, sample_shape: tuple[int, ...], rows: slice) -> Any:
    """Tensors → {"tensor", "on_device"} (sample-shaped ones cut to `rows`); lists recursively; numbers as is."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        tensor = value[rows] if tuple(value.shape) == sample_shape else value
        return {"tensor": tensor.detach().to("cpu", copy=True), "on_device": value.device.type != "cpu"}
    if isinstance(value, (list, tuple)):
        items = [_pack(item, sample_shape, rows) for item in value]
        if any(item is _SKIP for item in items):
            return _SKIP
        return {"list": items, "tuple": isinstance(value, tuple)}
    return _SKIP  # numpy schedules and other derived values: set_timesteps rebuilds them identically


def _restore(scheduler: Any, state: dict[str, Any], device: torch.device) -> None:
    for name, packed in state.items():
        setattr(scheduler, name, _unpack(packed, device))


def _unpack(packed: Any, device: torch.device) -> Any:
    if isinstance(packed, dict) and "tensor" in packed:
        tensor: torch.Tensor = packed["tensor"]
        return tensor.to(device) if packed["on_device"] else tensor
    if isinstance(packed, dict) and "list" in packed:
        items = [_unpack(item, device) for item in packed["list"]]
        return tuple(items) if packed["tuple"] else items
    return packed
