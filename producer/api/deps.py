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
from ..jobs import JobRecord
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
        """The record with a fresh presigned URL on every output (URLs are never stored: they would expire).

        Its cost comes from the read that made it: pass `pricer()` to it (`JobService.get(..., price=...)`)."""
        if not record.outputs or not isinstance(self.objects, Presigner):
            return record
        outputs = []
        for output in record.outputs:
            try:
                url = self.objects.presign_get(output.key, expires_in=self.url_expiry)
            except StorageError as exc:
                log.warning("cannot presign %s: %s", output.key, exc)
                url = None
            outputs.append(output.model_copy(update={"url": url}))
        return record.model_copy(update={"outputs": outputs})
