"""An attempt's images in the object store: written under keys of its own (`output_key` is attempt-scoped), so an
attempt that lost its lease never overwrites the winner's, and deleted again when the attempt does not settle them
onto the job's record (it failed part-way, or its settle was fenced off)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from PIL.Image import Image

from producer.jobs import JobRequest, Output, output_key
from storage import ObjectStore, StorageError

from .errors import LeaseLostError
from .families import rendered_by

log = logging.getLogger(__name__)


class AttemptOutputs:
    """What one attempt of `job_id` uploads; `discard()` deletes it, `keep()` hands it to the record."""

    def __init__(self, objects: ObjectStore, job_id: str, attempt: int) -> None:
        self.objects, self.job_id, self.attempt = objects, job_id, attempt
        self.keys: list[str] = []
        #: (family, dtype) of the pipeline that rendered the images, for the record.
        self.rendered: tuple[str, str] | None = None

    def upload(
        self, request: JobRequest, images: Sequence[Image], encoded: Sequence[bytes], lost: threading.Event
    ) -> list[Output]:
        """Put each image (with its seed, family and dtype as metadata); stops with `LeaseLostError` as soon as
        the lease thread has seen another attempt take the job."""
        assert request.seed is not None  # the service records and sends only resolved requests
        fmt, outputs = request.output_format, []
        for index, (image, data) in enumerate(zip(images, encoded, strict=True)):
            if lost.is_set():
                raise LeaseLostError(self.job_id)
            key = output_key(self.job_id, index, fmt, self.attempt)
            seed = request.seed + index
            metadata = {"job_id": self.job_id, "seed": str(seed)}
            ran = rendered_by(image)  # which family and dtype rendered it: on the object and on the record
            if ran is not None:
                metadata["family"], metadata["dtype"] = ran
                self.rendered = ran
            self.keys.append(key)  # before the put: a put that fails half-way may still leave an object
            self.objects.put(
                key,
                data,
                content_type=fmt.content_type,
                content_disposition=f'inline; filename="{self.job_id}-{index}.{fmt.extension}"',
                metadata=metadata,
            )
            outputs.append(
                Output(
                    key=key,
                    content_type=fmt.content_type,
                    bytes=len(data),
                    width=image.width,
                    height=image.height,
                    seed=seed,
                )
            )
        return outputs

    def keep(self) -> None:
        """The record holds them now."""
        self.keys.clear()

    def discard(self) -> None:
        """Delete what this attempt wrote: on no record, nobody will ever read it."""
        for key in self.keys:
            try:
                self.objects.delete(key)
            except StorageError as exc:  # a leftover is harmless: the bucket's lifecycle rule removes it
                log.warning("job %s: could not delete %s: %s", self.job_id, key, exc)
        self.keys.clear()
