"""A job's inputs resolved on every backend: the first resolution asks the origins (an upload in the same store,
an https-like URL on a loopback origin) and keeps the prepared images; the second reads them from the store alone."""

from __future__ import annotations

from producer.inputs import InputLimits
from producer.inputs.resolve import InputSources, resolve_inputs
from producer.jobs import JobRequest, input_object_key, new_job_id, upload_object_key
from producer.webhooks.ssrf import UrlPolicy
from storage import FullStore
from tests.inputs.images import gradient_png, png
from tests.inputs.origin import Answer, origin


def test_the_second_resolution_reads_storage_not_the_origins(store: FullStore) -> None:
    upload_id = new_job_id()
    store.put(upload_object_key(upload_id), png(96, 64, color=(255,), mode="L"), content_type="image/png")
    policy = UrlPolicy.from_entries(["127.0.0.1/32"], https_only=False)
    job_id = new_job_id()
    with origin({"/photo.png": Answer(gradient_png(96, 64))}) as site:
        request = JobRequest(
            prompt="a cat", width=64, height=64, image=site.url("/photo.png"), mask_image={"upload": upload_id}
        ).resolved("tiny")
        sources = InputSources(store, InputLimits(), policy)

        first = resolve_inputs(job_id, request, sources)
        store.delete(upload_object_key(upload_id))
        second = resolve_inputs(job_id, request, sources)

        assert site.count("/photo.png") == 1
    assert first.fetched == {"image", "mask"} and second.fetched == frozenset()
    assert second["image"].tobytes() == first["image"].tobytes() and second["mask"].tobytes() == first["mask"].tobytes()
    assert store.head(input_object_key(job_id, "image")).content_type == "image/png"
