"""A job's webhook delivery log, and redelivering one message."""

from __future__ import annotations

from fastapi import APIRouter, Request

from ..errors import JobConflictError, JobNotFoundError
from ..jobs import is_job_id
from ..webhooks.delivery import send_delivery
from ..webhooks.log import Delivery, DeliveryList, DeliveryLog
from .auth import CallerDep
from .deps import Deps
from .errors import ERROR_RESPONSES
from .hooks import HookConfig

router = APIRouter(prefix="/v1/jobs", tags=["webhooks"], responses=ERROR_RESPONSES)


def _log(http: Request, job_id: str, tenant: str | None) -> DeliveryLog:
    if not is_job_id(job_id):
        raise JobNotFoundError(job_id)
    deps = Deps.of(http)
    deps.service.get(job_id, tenant=tenant)  # 404 for an unknown job or another tenant's
    return DeliveryLog(deps.service.store.client, ttl_s=HookConfig.of(http).delivery_ttl_s)


@router.get("/{job_id}/deliveries", response_model=DeliveryList, summary="A job's webhook deliveries")
def deliveries(job_id: str, http: Request, caller: CallerDep) -> DeliveryList:
    """Every webhook message of the job, oldest first, with each attempt's status code, error and timing."""
    return DeliveryList(deliveries=_log(http, job_id, caller.tenant).for_job(job_id))


@router.post(
    "/{job_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=Delivery,
    summary="Send a webhook message again",
)
def redeliver(job_id: str, delivery_id: str, http: Request, caller: CallerDep) -> Delivery:
    """Queue a new attempt of the message now (same `webhook-id`, fresh signature), restarting its retry schedule
    (a retry already scheduled is dropped) and re-enabling an endpoint that answered 410. 409 while an attempt is
    in flight."""
    log = _log(http, job_id, caller.tenant)
    found = log.get(delivery_id) if len(delivery_id) <= 200 else None
    if found is None or found.job_id != job_id:
        raise JobNotFoundError(f"{job_id}/deliveries/{delivery_id}")
    ticket = log.reopen(delivery_id)
    if ticket is None:
        raise JobConflictError(f"delivery {delivery_id} has an attempt in flight; redeliver once it has ended")
    send_delivery(Deps.of(http).service.broker, HookConfig.of(http).webhook_queue, delivery_id, ticket=ticket)
    again = log.get(delivery_id)
    assert again is not None
    return again
