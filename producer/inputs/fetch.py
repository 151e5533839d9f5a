"""Fetching an image URL a client gave, through the SSRF guard: one lookup, every address vetted, the connection
pinned to a vetted address, no redirects, one deadline for the whole fetch, a byte cap and a content-type check.

Whatever goes wrong is an `InvalidInputError` on the field: a job whose image cannot be fetched fails with
`invalid_input`, saying why.
"""

from __future__ import annotations

import ssl
import time

import certifi
import httpcore

from ..errors import InvalidInputError, WebhookUrlError
from ..jobs import IMAGE_CONTENT_TYPES
from ..webhooks.ssrf import Resolver, UrlPolicy, check_url, system_resolver
from ..webhooks.transport import PinnedBackend

#: What the fetch asks for; a server may still answer anything, and the answer's type is checked.
_ACCEPT = ", ".join(IMAGE_CONTENT_TYPES)


def fetch_url(
    url: str,
    *,
    field: str,
    policy: UrlPolicy,
    max_bytes: int,
    timeout_s: float,
    resolver: Resolver = system_resolver,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[str, bytes]:
    """The content type and body of `url`; raises `InvalidInputError` on `field` for a refused or unreachable URL,
    an answer other than 200, a type that is not an image, or a body over `max_bytes`."""
    try:
        target = check_url(url, policy, resolver)
    except WebhookUrlError as exc:
        raise InvalidInputError(field, f"refused: {exc}") from None
    backend = PinnedBackend(target, deadline_at=time.monotonic() + timeout_s)
    context = ssl_context or ssl.create_default_context(cafile=certifi.where())
    headers = [(b"Accept", _ACCEPT.encode()), (b"User-Agent", b"sdqueue-inputs")]
    try:
        with (
            httpcore.ConnectionPool(ssl_context=context, network_backend=backend, retries=0) as pool,
            pool.stream("GET", url, headers=headers, extensions={"timeout": _timeouts(timeout_s)}) as response,
        ):
            content_type = _header(response, b"content-type").split(";")[0].strip().lower()
            _check_answer(field, target.host, response.status, content_type)
            declared = _header(response, b"content-length")
            if declared.isdigit() and int(declared) > max_bytes:
                raise InvalidInputError(field, f"the image is {declared} bytes, over the limit of {max_bytes}")
            body = bytearray()
            for chunk in response.iter_stream():
                body += chunk
                if len(body) > max_bytes:
                    raise InvalidInputError(field, f"the image is over the limit of {max_bytes} bytes")
            return content_type, bytes(body)
    except httpcore.TimeoutException:
        raise InvalidInputError(field, f"fetching {target.host} took longer than {timeout_s:g} s") from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as exc:
        raise InvalidInputError(field, f"{target.host} is unreachable ({exc or type(exc).__name__})") from None


def _check_answer(field: str, host: str, status: int, content_type: str) -> None:
    if 300 <= status < 400:
        raise InvalidInputError(
            field, f"{host} answered a redirect ({status}), which is not followed; give the final URL"
        )
    if status != 200:
        raise InvalidInputError(field, f"{host} answered {status}")
    if content_type not in IMAGE_CONTENT_TYPES:
        raise InvalidInputError(
            field, f"{host} sent {content_type or 'no content type'}, not one of {', '.join(IMAGE_CONTENT_TYPES)}"
        )


def _header(response: httpcore.Response, name: bytes) -> str:
    return next((value.decode("latin-1") for key, value in response.headers if key.lower() == name), "")


def _timeouts(timeout_s: float) -> dict[str, float]:
    return {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
