"""The SSRF guard: every form of a private, loopback or metadata address is refused, and nothing is dialled.

A canary TCP listener on loopback stands where a forbidden request would land; it must see no connection. The
guard's resolver is injected where a test needs a name with chosen addresses: no DNS server can run here.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator

import pytest
import redis

from producer.errors import WebhookUrlError
from producer.jobs import WebhookEventType
from producer.webhooks.delivery import Deliverer, RetryPolicy
from producer.webhooks.keyring import Keyring
from producer.webhooks.log import DeliveryLog, DeliveryState
from producer.webhooks.signing import new_secret
from producer.webhooks.ssrf import UrlPolicy, check_url, check_url_shape, system_resolver
from tests.webhooks.receivers import Canary, canary, counting_resolver, receiver

# Forms of the cloud metadata address and of every forbidden range; `{port}` is the canary's.
FORBIDDEN = {
    "metadata": "http://169.254.169.254:{port}/latest/meta-data/",
    "metadata, IPv4-mapped IPv6": "http://[::ffff:169.254.169.254]:{port}/",
    "metadata, decimal": "http://2852039166:{port}/",
    "metadata, hex": "http://0xa9fea9fe:{port}/",
    "metadata, octal": "http://0251.0376.0251.0376:{port}/",
    "metadata, NAT64": "http://[64:ff9b::a9fe:a9fe]:{port}/",
    "metadata, 6to4": "http://[2002:a9fe:a9fe::]:{port}/",
    "localhost": "http://localhost:{port}/",
    "localhost with a dot": "http://localhost.:{port}/",
    "sub.localhost": "http://hooks.localhost:{port}/",
    "loopback": "http://127.0.0.1:{port}/",
    "loopback, short": "http://127.1:{port}/",
    "loopback, decimal": "http://2130706433:{port}/",
    "loopback, hex": "http://0x7f000001:{port}/",
    "loopback, octal": "http://0177.0.0.1:{port}/",
    "loopback, IPv4-mapped": "http://[::ffff:127.0.0.1]:{port}/",
    "loopback, IPv4-compatible": "http://[::127.0.0.1]:{port}/",
    "10/8": "http://10.0.0.1:{port}/",
    "172.16/12": "http://172.31.255.1:{port}/",
    "192.168/16": "http://192.168.0.10:{port}/",
    "100.64/10 (CGNAT)": "http://100.100.100.200:{port}/",
    "::1": "http://[::1]:{port}/",
    "fc00::/7": "http://[fd12:3456::1]:{port}/",
    "fe80::/10": "http://[fe80::1]:{port}/",
    "0.0.0.0": "http://0.0.0.0:{port}/",
    "0/8, decimal zero": "http://0:{port}/",
    "::": "http://[::]:{port}/",
    "multicast": "http://224.0.0.1:{port}/",
    "broadcast": "http://255.255.255.255:{port}/",
    "reserved 240/4": "http://240.0.0.1:{port}/",
}


@pytest.fixture
def bird() -> Iterator[Canary]:
    with canary() as listening:
        yield listening


def _deliverer(
    client: redis.Redis, policy: UrlPolicy, resolver: Callable[[str, int], list[str]] = system_resolver
) -> tuple[Deliverer, DeliveryLog, list[tuple[str, float]]]:
    log = DeliveryLog(client, ttl_s=600)
    sent: list[tuple[str, float]] = []
    deliverer = Deliverer(
        log,
        Keyring(client, [new_secret()]),
        policy,
        RetryPolicy([0.0, 1.0]),
        lambda msg_id, delay_s=0.0, ticket=None: sent.append((msg_id, delay_s)),
        timeout_s=2,
        resolver=resolver,
    )
    return deliverer, log, sent


def _attempt(client: redis.Redis, url: str, policy: UrlPolicy, **kw: object) -> DeliveryState:
    deliverer, log, sent = _deliverer(client, policy, **kw)  # type: ignore[arg-type]
    log.create("msg_x", "job", WebhookEventType.JOB_SUCCEEDED, url, b"{}")
    deliverer.deliver("msg_x")
    found = log.get("msg_x")
    assert found is not None
    assert sent == [] or found.state is DeliveryState.PENDING
    return found.state


@pytest.mark.redis
@pytest.mark.parametrize("url", FORBIDDEN.values(), ids=FORBIDDEN.keys())
def test_forbidden_addresses_are_refused_and_never_dialled(url: str, bird: Canary, redis_client: redis.Redis) -> None:
    target = url.format(port=bird.port)
    policy = UrlPolicy(https_only=False)  # an empty allow-list; http allowed so that only the address decides
    with pytest.raises(WebhookUrlError):
        check_url(target, policy)
    with pytest.raises(WebhookUrlError):
        check_url(target.replace("http://", "https://"), UrlPolicy())
    assert _attempt(redis_client, target, policy) is DeliveryState.BLOCKED
    assert bird.connections == 0


@pytest.mark.parametrize(
    "url", [u for u in FORBIDDEN.values() if "localhost" in u or "[" in u or u.split("//")[1][0].isdigit()]
)
def test_literal_and_loopback_forms_are_refused_at_submission_too(url: str) -> None:
    with pytest.raises(WebhookUrlError):
        check_url_shape(url.format(port=443).replace("http://", "https://"), UrlPolicy())


@pytest.mark.redis
def test_a_name_resolving_to_a_public_and_a_private_address_is_refused(bird: Canary, redis_client: redis.Redis) -> None:
    resolver, asked = counting_resolver({"mixed.example.com": ["93.184.216.34", "127.0.0.1"]})
    url = f"http://mixed.example.com:{bird.port}/hook"
    with pytest.raises(WebhookUrlError, match=r"127\.0\.0\.1, which is loopback"):
        check_url(url, UrlPolicy(https_only=False), resolver)
    assert _attempt(redis_client, url, UrlPolicy(https_only=False), resolver=resolver) is DeliveryState.BLOCKED
    assert bird.connections == 0 and asked == ["mixed.example.com", "mixed.example.com"]


@pytest.mark.redis
def test_the_connection_goes_to_the_checked_address_with_no_second_lookup(redis_client: redis.Redis) -> None:
    # A rebinding resolver: vetted once (loopback is allow-listed for this test), then it would answer 10.0.0.1.
    answers = {"hooks.example.com": ["127.0.0.1"]}
    resolver, asked = counting_resolver(answers)
    policy = UrlPolicy.from_entries(["127.0.0.1/32"], https_only=False)
    with receiver() as got:
        port = got.url.split(":")[2].split("/")[0]
        url = f"http://hooks.example.com:{port}/hook"

        def rebinding(host: str, p: int) -> list[str]:
            found = resolver(host, p)
            answers["hooks.example.com"] = ["10.0.0.1"]
            return found

        assert _attempt(redis_client, url, policy, resolver=rebinding) is DeliveryState.DELIVERED
        assert asked == ["hooks.example.com"]  # one lookup: the guard's
        assert got.requests[0].headers["host"] == f"hooks.example.com:{port}"  # the original name, not the IP


@pytest.mark.redis
def test_a_redirect_to_a_loopback_address_is_not_followed(bird: Canary, redis_client: redis.Redis) -> None:
    policy = UrlPolicy.from_entries(["127.0.0.1/32"], https_only=False)
    with receiver([(302, {"Location": f"http://127.0.0.1:{bird.port}/latest/meta-data/"})]) as got:
        deliverer, log, sent = _deliverer(redis_client, policy)
        log.create("msg_r", "job", WebhookEventType.JOB_SUCCEEDED, got.url, b"{}")
        deliverer.deliver("msg_r")
        found = log.get("msg_r")
    assert found is not None and found.state is DeliveryState.PENDING and len(sent) == 1  # a failure: retried
    assert found.attempts[0].status_code == 302 and "not followed" in (found.attempts[0].error or "")
    assert bird.connections == 0 and len(got.requests) == 1


def test_https_is_required_unless_the_host_is_allow_listed() -> None:
    with pytest.raises(WebhookUrlError, match="https"):
        check_url_shape("http://example.com/hook", UrlPolicy())
    check_url_shape("https://example.com/hook", UrlPolicy())
    check_url_shape("http://127.0.0.1:9/hook", UrlPolicy.from_entries(["127.0.0.1/32"]))
    check_url_shape("http://dev-box/hook", UrlPolicy.from_entries(["dev-box"]))
    for bad in ("ftp://example.com/", "https:///nohost", "https://example.com:99999/", "javascript:alert(1)"):
        with pytest.raises(WebhookUrlError):
            check_url_shape(bad, UrlPolicy())


def test_ipv6_loopback_canary_sees_nothing_either(redis_server: str) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        context = canary(socket.AF_INET6, "::1")
        bird = context.__enter__()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        client = redis.Redis.from_url(redis_server)
        for url in (f"http://[::1]:{bird.port}/", f"http://[0:0:0:0:0:0:0:1]:{bird.port}/"):
            client.delete("sdq:wh:msg:msg_x", "sdq:wh:job:job")
            assert _attempt(client, url, UrlPolicy(https_only=False)) is DeliveryState.BLOCKED
        assert bird.connections == 0
    finally:
        context.__exit__(None, None, None)


def test_every_address_in_the_matrix_is_judged_by_the_ipv4_address_it_carries() -> None:
    from producer.webhooks.ssrf import forbidden_reason

    assert forbidden_reason(ipaddress.ip_address("::ffff:8.8.8.8")) is None
    assert forbidden_reason(ipaddress.ip_address("64:ff9b::808:808")) is None
    assert forbidden_reason(ipaddress.ip_address("2002:0a00:0001::1")) is not None  # 6to4 of 10.0.0.1
