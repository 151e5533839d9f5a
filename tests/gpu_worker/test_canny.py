"""Canny edges on the worker (kornia), and a job's inputs prepared from storage with them."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from gpu_worker.canny import canny
from gpu_worker.conditioning import Mode, Preprocess
from gpu_worker.job_inputs import prepare_inputs
from producer.inputs.resolve import InputSources
from producer.jobs import JobRequest, input_object_key, new_job_id
from storage import open_store

from .inputs_support import half_white, photo


def test_canny_finds_the_edge_of_a_step_and_nothing_on_flat_ground() -> None:
    edges = np.asarray(canny(half_white(True)).convert("L")) > 127
    assert edges.shape == (64, 64)
    columns = np.nonzero(edges.any(axis=0))[0]
    assert columns.min() >= 29 and columns.max() <= 34  # only along the step at x = 32
    assert edges[8:56, 30:34].any(axis=1).all()  # all the way down it (away from the borders)
    assert not np.asarray(canny(Image.new("RGB", (64, 64), (90, 90, 90)))).any()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_inputs_are_resolved_once_then_read_back_and_canny_runs_on_the_worker(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    data_url = "data:image/png;base64," + __import__("base64").b64encode(_png(photo())).decode()
    request = JobRequest(
        prompt="a cat",
        model="tiny",
        width=64,
        height=64,
        seed=1,
        image=data_url,
        strength=0.5,
        controlnets=[{"model": "tiny-controlnet", "image": data_url, "preprocess": "canny"}],
    )
    job_id = new_job_id()
    first = prepare_inputs(job_id, request, InputSources(store))
    assert first is not None and first.fetched == {"image", "controlnet-0"}
    assert store.head(input_object_key(job_id, "image")) is not None
    again = prepare_inputs(job_id, request, InputSources(store))
    assert again is not None and again.fetched == frozenset()  # a later attempt reads inputs/<job>/ only
    inputs = again.inputs
    assert inputs.spec.mode is Mode.IMAGE and inputs.spec.strength == 0.5
    assert inputs.spec.controlnets[0].preprocess is Preprocess.CANNY
    assert np.array_equal(np.asarray(inputs.image), np.asarray(photo()))
    assert np.array_equal(np.asarray(inputs.control_images[0]), np.asarray(canny(photo())))
    assert prepare_inputs(job_id, JobRequest(prompt="a cat", model="tiny", seed=1), InputSources(store)) is None
