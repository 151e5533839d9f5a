"""Image URLs go through the webhook SSRF guard: the same matrix of forbidden forms (metadata, loopback, private,
their numeric and IPv6 disguises) is refused, at submission where no DNS is needed and always before a fetch, and
a canary listening where a forbidden fetch would land sees no connection."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.errors import InvalidInputError
from producer.inputs import InputLimits
from producer.inputs.resolve import InputSources, resolve_inputs
from producer.jobs import JobRequest, new_job_id
from producer.webhooks.ssrf import UrlPolicy
from storage import LocalStore
from tests.inputs.images import png
from tests.inputs.origin import Answer, origin
from tests.webhooks.receivers import Canary, canary, counting_resolver
from tests.webhooks.test_webhook_ssrf import FORBIDDEN


@pytest.fixture
def bird() -> Iterator[Canary]:
    with canary() as listening:
        yield listening


def _resolve(url: str, store: LocalStore, policy: UrlPolicy, **kw: object) -> None:
    request = JobRequest(prompt="a cat", width=64, height=64, image={"url": url}).resolved("tiny")
    resolve_inputs(new_job_id(), request, InputSources(store, InputLimits(), policy, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("url", FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_forbidden_image_urls_are_refused_and_never_dialled(url: str, bird: Canary, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")
    target = url.format(port=bird.port)
    for candidate, policy in (
        (target, UrlPolicy(https_only=False)),  # only the address decides
        (target.replace("http://", "https://"), UrlPolicy()),  # the production policy
    ):
        with pytest.raises(InvalidInputError) as info:
            _resolve(candidate, store, policy)
        assert info.value.field == "image.url" and "refused" in info.value.reason
    assert bird.connections == 0
    assert not list(store.list("inputs/"))


def test_a_name_resolving_to_a_public_and_a_private_address_is_refused(bird: Canary, tmp_path: Path) -> None:
    resolver, asked = counting_resolver({"mixed.example.com": ["93.184.216.34", "127.0.0.1"]})
    with pytest.raises(InvalidInputError, match=r"127\.0\.0\.1, which is loopback"):
        _resolve(
            f"http://mixed.example.com:{bird.port}/a.png",
            LocalStore(tmp_path),
            UrlPolicy(https_only=False),
            resolver=resolver,
        )
    assert bird.connections == 0 and asked == ["mixed.example.com"]


def test_the_fetch_goes_to_the_vetted_address_with_no_second_lookup(tmp_path: Path) -> None:
    answers = {"images.example.com": ["127.0.0.1"]}
    resolver, asked = counting_resolver(answers)

    def rebinding(host: str, port: int) -> list[str]:
        found = resolver(host, port)
        answers["images.example.com"] = ["10.0.0.1"]  # what a rebinding DNS server would answer next
        return found

    policy = UrlPolicy.from_entries(["127.0.0.1/32"], https_only=False)
    with origin({"/a.png": Answer(png())}) as site:
        _resolve(site.url("/a.png", host="images.example.com"), LocalStore(tmp_path), policy, resolver=rebinding)
        assert asked == ["images.example.com"]  # one lookup: the guard's
        assert site.requests[0][1]["host"] == f"images.example.com:{site.port}"  # the original name, not the IP


def test_a_redirect_to_the_metadata_address_is_not_followed(bird: Canary, tmp_path: Path) -> None:
    policy = UrlPolicy.from_entries(["127.0.0.1/32"], https_only=False)
    moved = Answer(b"", "text/plain", 302, {"Location": f"http://127.0.0.1:{bird.port}/latest/meta-data/"})
    with origin({"/a.png": moved}) as site, pytest.raises(InvalidInputError, match="not followed"):
        _resolve(site.url("/a.png"), LocalStore(tmp_path), policy)
    assert bird.connections == 0 and len(site.requests) == 1
