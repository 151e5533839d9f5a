"""The image modes of `bench.worker --mode`: their job requests, the plain loop's inputs, and the cost of resolving a
job's inputs (fetch, decode, store), measured in-process against the benchmark's own storage.

Every job of a mode restyles (or repaints, or follows the edges of) the same kind of photo at the job's size: a
smooth gradient with noise, made here, sent as a data URL (the API stores it as an upload, once, since uploads made
from data URLs are content-addressed). The loop baseline is the worker's pipeline called with the same prepared
inputs, so the ratio measures what the system adds: resolving inputs, queueing, encoding and uploading.
"""

from __future__ import annotations

import base64
import io
import os
import statistics
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

MODES = ("text", "img2img", "inpaint", "controlnet")
STRENGTH = 0.6


def photo(size: int) -> Any:
    """A smooth, colourful stand-in for a photo, RGB."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size] / size
    pixels = np.stack([np.sin(6 * x) * 0.5 + 0.5, np.cos(4 * y) * 0.5 + 0.5, (x + y) / 2], axis=-1) * 200
    pixels += np.random.default_rng(0).uniform(0, 55, (size, size, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def mask(size: int) -> Any:
    """White (repaint) in the middle quarter, black elsewhere."""
    from PIL import Image

    image = Image.new("L", (size, size), 0)
    image.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return image


def png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(image: Any) -> str:
    return "data:image/png;base64," + base64.b64encode(png(image)).decode()


def controlnet_model(model: str) -> str:
    return "tiny-sdxl-controlnet" if "sdxl" in model else "tiny-controlnet"


@lru_cache(maxsize=8)
def request_fields(mode: str, size: int, model: str) -> dict[str, Any]:
    """The `JobRequest` fields of `mode`'s jobs (none for text-to-image); made once (do not modify)."""
    if mode == "text":
        return {}
    image = data_url(photo(size))
    if mode == "img2img":
        return {"image": image, "strength": STRENGTH}
    if mode == "inpaint":
        return {"image": image, "mask_image": data_url(mask(size)), "strength": 1.0}
    return {"controlnets": [{"model": controlnet_model(model), "image": image, "preprocess": "canny"}]}


def loop_inputs(mode: str, size: int, model: str) -> Any:
    """The prepared inputs the worker makes of `mode`'s jobs (Canny included), for the plain loop."""
    from gpu_worker.canny import canny
    from gpu_worker.conditioning import ControlUnit, InputSpec, Mode, PreparedInputs, Preprocess

    if mode == "text":
        return None
    if mode == "img2img":
        return PreparedInputs(InputSpec(Mode.IMAGE, STRENGTH), image=photo(size))
    if mode == "inpaint":
        return PreparedInputs(InputSpec(Mode.INPAINT, 1.0), image=photo(size), mask=mask(size))
    unit = ControlUnit(controlnet_model(model), preprocess=Preprocess.CANNY)
    return PreparedInputs(InputSpec(controlnets=(unit,)), control_images=(canny(photo(size)),))


def resolution_cost(mode: str, request: Any, store: Any, runs: int = 5) -> dict[str, float]:
    """Milliseconds to resolve one job's inputs from an upload in `store`: the first attempt (fetch the upload,
    decode, check, normalize, store under `inputs/<job>/`), split into its parts, and a later attempt (read back)."""
    from producer.inputs import images
    from producer.inputs.resolve import InputSources, resolve_inputs
    from producer.jobs import input_object_key, new_job_id, upload_object_key

    if mode == "text":
        return {}
    ids = {path: new_job_id() for path, _, _ in request.input_images()}
    for path, _, ref in request.input_images():  # the API would have stored each data URL as this upload
        inline = ref.inline()
        assert inline is not None
        store.put(upload_object_key(ids[path]), inline[1], content_type=inline[0])
    uploaded = request.model_copy(update=_as_uploads(request, ids))
    first, again, fetch, decode, store_ms = [], [], [], [], []
    for _ in range(runs):
        job_id = new_job_id()
        started = time.perf_counter()
        resolve_inputs(job_id, uploaded, InputSources(store), never_claimed=True)  # as the worker's first attempt
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        resolve_inputs(job_id, uploaded, InputSources(store))
        again.append(time.perf_counter() - started)
        for path, name, _ in uploaded.input_images():  # the first attempt's parts, one input at a time
            started = time.perf_counter()
            data = store.get(upload_object_key(ids[path]))
            fetch.append(time.perf_counter() - started)
            started = time.perf_counter()
            image = images.decode(data, field=path, max_pixels=1 << 26)
            normalized = images.normalize(
                image, role="mask" if name == "mask" else "image", width=uploaded.width, height=uploaded.height
            )
            decode.append(time.perf_counter() - started)
            started = time.perf_counter()
            store.put(
                input_object_key(job_id, f"bench-{name}"), images.encode_png(normalized), content_type="image/png"
            )
            store_ms.append(time.perf_counter() - started)
    inputs = len(list(uploaded.input_images()))
    return {
        "input_first_attempt_ms": 1000 * statistics.median(first),
        "input_read_back_ms": 1000 * statistics.median(again),
        "input_fetch_ms": 1000 * statistics.median(fetch) * inputs,
        "input_decode_normalize_ms": 1000 * statistics.median(decode) * inputs,
        "input_store_ms": 1000 * statistics.median(store_ms) * inputs,
    }


def _as_uploads(request: Any, ids: dict[str, str]) -> dict[str, Any]:
    from producer.jobs import ImageRef

    update: dict[str, Any] = {}
    if request.image is not None:
        update["image"] = ImageRef(upload=ids["image"])
    if request.mask_image is not None:
        update["mask_image"] = ImageRef(upload=ids["mask_image"])
    if request.controlnets:
        update["controlnets"] = tuple(
            unit.model_copy(update={"image": ImageRef(upload=ids[f"controlnets.{index}.image"])})
            for index, unit in enumerate(request.controlnets)
        )
    return update


def stored_resolution_cost(
    mode: str, request: Any, s3: Any, root: Path, *, bucket: str, head_inference_s: float
) -> dict[str, float]:
    """`resolution_cost` against the benchmark's storage (its S3 server, else files under `root`), and its share
    of a job whose inference took `head_inference_s`."""
    from storage import open_store

    if mode == "text":
        return {}
    if s3 is not None:
        os.environ.update(s3.env)  # this process reads the same S3 server as the worker, with its credentials
    store = open_store(s3.url(bucket, "bench-inputs") if s3 is not None else root.as_uri())
    cost = resolution_cost(mode, request, store)
    first_s = cost["input_first_attempt_ms"] / 1000
    return {**cost, "input_share_of_job": first_s / (first_s + head_inference_s)}
