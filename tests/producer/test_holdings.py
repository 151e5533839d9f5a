"""What workers report they hold, on a real Redis: reports expire with their worker, and the catalog counts them."""

from __future__ import annotations

import time

import pytest
import redis

from producer.catalog import load_catalog
from producer.holdings import Holdings, clear_holdings, list_models, read_holdings, report_holdings

pytestmark = pytest.mark.redis


def test_reports_are_read_back_until_they_expire(redis_client: redis.Redis) -> None:
    report_holdings(redis_client, "w1", Holdings(("sdxl",), ("stabilityai/stable-diffusion-xl-base-1.0",)), ttl_s=60)
    report_holdings(redis_client, "w2", Holdings((), ("tiny",)), ttl_s=0.2)
    assert read_holdings(redis_client) == {
        "w1": Holdings(("sdxl",), ("stabilityai/stable-diffusion-xl-base-1.0",)),
        "w2": Holdings((), ("tiny",)),
    }
    time.sleep(0.3)
    assert set(read_holdings(redis_client)) == {"w1"}  # a worker that stopped beating stops counting
    clear_holdings(redis_client, "w1")
    assert read_holdings(redis_client) == {}


def test_a_catalog_model_is_loaded_by_name_and_cached_by_source() -> None:
    catalog = load_catalog(None)
    held = {
        "a": Holdings(loaded=("sdxl",), cached=("stabilityai/stable-diffusion-xl-base-1.0", "tiny")),
        "b": Holdings(loaded=("org/not-in-the-catalog",), cached=("black-forest-labs/FLUX.1-schnell",)),
    }
    models = {model.name: model for model in list_models(catalog, held).models}
    assert list(models) == list(catalog.models)  # the catalog's order
    assert (models["sdxl"].loaded, models["sdxl"].loaded_workers, models["sdxl"].cached_workers) == (True, 1, 1)
    assert (models["flux-schnell"].loaded, models["flux-schnell"].cached) == (False, True)
    assert (models["tiny"].cached, models["flux-dev"].cached, models["flux-dev"].loaded) == (True, False, False)
    assert models["sdxl"].source == "stabilityai/stable-diffusion-xl-base-1.0" and models["sdxl-refiner"].refiner
