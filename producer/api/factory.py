"""Building the API from its settings, once per server process: the app factory `sdq api` hands to uvicorn.

With `SDQ_API_WORKERS` > 1 uvicorn starts that many processes, each on its own socket of the port
(producer/serve.py), and each one calls `app_from_env` to build its own app: its own Redis connections (sync and
asyncio), job service and authenticator.
Nothing else is per process: keys, rate limits, quotas, idempotency records and jobs all live in Redis, and the
link-signing key is one file under the data dir (made once, under a lock). The embedded Redis is started by the
`sdq api` parent before any worker exists and reaches them as `SDQ_REDIS_URL`, so no worker ever stops it.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from datetime import timedelta

from fastapi import FastAPI

from ..logs import configure_logging
from ..settings import ApiSettings

#: The import string uvicorn loads in every server process (`factory=True`).
APP_FACTORY = "producer.api.factory:app_from_env"


def build_app(settings: ApiSettings) -> FastAPI:
    """The API over the backends `settings` name; they are closed when the server shuts the app down."""
    from storage import LinkSigner, open_store

    from ..catalog import load_catalog
    from ..runtime import open_backends, signing_secret
    from ..service import JobService
    from ..source_policy import policy_from
    from ..webhooks.ssrf import UrlPolicy
    from .app import create_app
    from .auth import authenticator
    from .hooks import HookConfig
    from .scaling import Fleet

    catalog = load_catalog(settings.model_catalog)  # CatalogError names the file before anything starts
    resources = ExitStack()
    try:
        backends = resources.enter_context(open_backends(settings))
        signer = LinkSigner(signing_secret(settings), settings.resolved_public_url)
        objects = open_store(settings.resolved_storage_url, signer=signer, credentials=settings.storage_credentials())
        service = JobService(
            backends.store,
            backends.broker,
            queue=settings.queue,
            default_model=settings.default_model,
            allowed_models=frozenset(settings.allowed_models),
            url_policy=UrlPolicy.from_entries(settings.webhook_allow, https_only=settings.webhook_https_only),
            catalog=catalog,
            sources=policy_from(
                allowed_models=settings.allowed_models,
                allowed_loras=settings.allowed_loras,
                strict=settings.strict_sources,
                catalog=catalog,
            ),
        )
        return create_app(
            service,
            objects,
            url_expiry=timedelta(seconds=settings.url_expiry_s),
            fleet=Fleet.from_settings(settings, backends.store.client),
            auth=authenticator(settings, backends.client),
            redis_url=backends.redis_url,
            batch_queue=settings.batch_queue,
            max_batch_bytes=settings.max_batch_bytes,
            hooks=HookConfig(
                inbound_secrets=tuple(s.get_secret_value() for s in settings.inbound_webhook_secrets),
                webhook_queue=settings.webhook_queue,
                delivery_ttl_s=settings.job_ttl_s + 24 * 3600,
            ),
            inputs=settings.input_limits(),
            input_url_policy=settings.input_url_policy(),
            on_shutdown=resources.close,
            streams=settings.stream_limits(),
        )
    except BaseException:
        resources.close()
        raise


def app_from_env() -> FastAPI:
    """uvicorn's app factory: `ApiSettings` from this process's environment (which `sdq api` set up)."""
    if not logging.getLogger().handlers:  # a fresh worker process: log like the `sdq api` that started it
        configure_logging(logging.getLevelName(logging.getLogger("uvicorn.error").getEffectiveLevel()))
    return build_app(ApiSettings())
