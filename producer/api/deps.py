"""What route handlers need, built once per app and found through `request.app.state`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request

from storage import ObjectStore, Presigner, StorageError

from ..cost import CostCalculator
from ..eta import Forecaster
from ..jobhash import Pricer
from ..jobs import InputImage, JobRecord, JobStatus, input_object_key, upload_object_key
from ..service import JobService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Deps:
    """The API's collaborators."""

    service: JobService
    objects: ObjectStore
    url_expiry: timedelta
    #: Prices each job's GPU time on read (its share of the day's bill changes until the day is over).
    costs: CostCalculator | None = None
    #: ETAs of queued and running jobs, from the fleet's throughput (None: records go out without one).
    forecaster: Forecaster | None = None

    @staticmethod
    def of(request: Request) -> Deps:
        deps: Deps = request.app.state.deps
        return deps

    def pricer(self) -> Pricer | None:
        """What prices the records of one response, from the hashes the store reads for it (None: no pricing).
        Pass it to the read (`JobService.get`, `list`, ...): one pricer per response reads each day's bill once."""
        return None if self.costs is None else self.costs.pricer()

    def with_eta(self, record: JobRecord) -> JobRecord:
        """The record with its `eta_s` (queued and running jobs), from a fleet snapshot at most a second old."""
        return record if self.forecaster is None else self.forecaster.apply(record)

    def with_urls(self, record: JobRecord) -> JobRecord:
        """The record with a fresh presigned URL on every output and input image (URLs are never stored: they would
        expire).

        Its cost comes from the read that made it: pass `pricer()` to it (`JobService.get(..., price=...)`)."""
        named = record.request.input_images()
        if not (record.outputs or named) or not isinstance(self.objects, Presigner):
            return record
        outputs = [output.model_copy(update={"url": self._presign(output.key)}) for output in record.outputs]
        inputs = []
        for field, name, ref in named:
            # A succeeded job's prepared input (what it ran with) exists for sure; before that only the upload does.
            if record.status is JobStatus.SUCCEEDED:
                key: str | None = input_object_key(record.id, name)
            else:
                key = upload_object_key(ref.upload) if ref.upload is not None else None
            url = self._presign(key) if key is not None else None
            inputs.append(InputImage(field=field, name=name, upload=ref.upload, url=url))
        return record.model_copy(update={"outputs": outputs, "inputs": inputs})

    def _presign(self, key: str) -> str | None:
        assert isinstance(self.objects, Presigner)
        try:
            return self.objects.presign_get(key, expires_in=self.url_expiry)
        except StorageError as exc:
            log.warning("cannot presign %s: %s", key, exc)
            return None
