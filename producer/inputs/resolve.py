"""Resolving a job's input images once: fetch or read each, decode, check, normalize, and keep it in storage.

The first attempt of a job gets each image from its origin (an upload, a data URL, an https URL), checks it as the
API did (bytes, pixels, decode, the mask's size), normalizes it (`images.normalize`) and stores the result under
`inputs/<job>/<name>.png`, each object only once every image of the job passed. Every later attempt (a retry, a
spot resume, a hand-off to another worker) finds those objects and reads them: the origin is never asked again, so
a URL that changed or went away, or an upload that expired, cannot make a retry differ from the first attempt.

Called by the worker when it prepares a job; needs Pillow, not torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from storage import ObjectNotFoundError, ObjectStore, ObjectTooLargeError, get_at_most

from ..errors import InvalidInputError
from ..jobs import ImageRef, JobRequest, input_object_key, upload_object_key
from ..webhooks.ssrf import Resolver, UrlPolicy, system_resolver
from . import images
from .fetch import fetch_url
from .limits import InputLimits

if TYPE_CHECKING:
    from PIL import Image

#: The role each input's object name plays, which decides how it is normalized.
_ROLES: Mapping[str, images.Role] = {"image": "image", "mask": "mask", "ip-adapter": "reference"}


@dataclass(frozen=True)
class InputSources:
    """Where the origins of input images are: the job storage (uploads live there too) and the rules for URLs."""

    store: ObjectStore
    limits: InputLimits = field(default_factory=InputLimits)
    url_policy: UrlPolicy = field(default_factory=UrlPolicy)
    resolver: Resolver = system_resolver


@dataclass(frozen=True)
class ResolvedInputs:
    """A job's prepared inputs by object name (`image`, `mask`, `controlnet-0`, `ip-adapter`), and which of them
    this call had to get from their origin (the rest were read back from `inputs/<job>/`)."""

    images: Mapping[str, Image.Image]
    fetched: frozenset[str]

    def __getitem__(self, name: str) -> Image.Image:
        return self.images[name]


def resolve_inputs(
    job_id: str, request: JobRequest, sources: InputSources, *, never_claimed: bool = False
) -> ResolvedInputs:
    """Every input image of the job, normalized; raises `InvalidInputError` (the job fails with `invalid_input`)
    and `storage.StorageError` (a storage outage: worth a retry).

    `never_claimed`: no attempt of the job has begun (its record counts no attempts), so no image generated yet
    came from a stored copy: an upload or a data URL is read without first looking for one (a storage round trip
    less on nearly every job), and what a preparation that never claimed the job may have stored is replaced. An
    https URL is still looked for first: a preparation whose message went back before its claim (a spot notice, a
    stopping executor, a storage error) has fetched it already, and a URL's origin is asked only once."""
    stored: dict[str, Image.Image] = {}
    originals: dict[str, tuple[str, Image.Image]] = {}
    for path, name, ref in request.input_images():
        look = not never_claimed or ref.kind == "url"
        data = _stored(sources.store, input_object_key(job_id, name)) if look else None
        if data is None:
            originals[name] = (path, _original(path, ref, sources))
        else:
            stored[name] = images.decode(data, field=path, max_pixels=sources.limits.max_image_pixels)
    _check_mask(originals)
    prepared: dict[str, Image.Image] = {}
    for name, (path, image) in originals.items():
        normalized = _normalize(path, name, image, request)
        sources.store.put(input_object_key(job_id, name), images.encode_png(normalized), content_type="image/png")
        prepared[name] = normalized
    return ResolvedInputs(images={**stored, **prepared}, fetched=frozenset(originals))


def _stored(store: ObjectStore, key: str) -> bytes | None:
    try:
        return store.get(key)
    except ObjectNotFoundError:
        return None


def _original(path: str, ref: ImageRef, sources: InputSources) -> Image.Image:
    limits = sources.limits
    if ref.upload is not None:
        data = _uploaded(f"{path}.upload", ref.upload, sources)
        where = f"{path}.upload"
    elif (inline := ref.inline()) is not None:
        where, data = f"{path}.url", inline[1]
        if len(data) > limits.max_inline_bytes:
            limit = limits.max_inline_bytes
            raise InvalidInputError(where, f"the data URL holds {len(data)} bytes, over the limit of {limit}")
    else:
        assert ref.url is not None
        where = f"{path}.url"
        _, data = fetch_url(
            ref.url,
            field=where,
            policy=sources.url_policy,
            max_bytes=limits.max_upload_bytes,
            timeout_s=limits.fetch_timeout_s,
            resolver=sources.resolver,
        )
    return images.decode(data, field=where, max_pixels=limits.max_image_pixels)


def _uploaded(where: str, upload_id: str, sources: InputSources) -> bytes:
    key, limit = upload_object_key(upload_id), sources.limits.max_upload_bytes
    try:
        # Bounded: a backend that cannot cap an upload's size (an Azure SAS) may hold anything. One request where the
        # backend can check the size as it reads (S3, Azure, local files), else a HEAD first.
        return get_at_most(sources.store, key, limit)
    except ObjectTooLargeError as exc:
        reason = f"upload {upload_id!r} holds {exc.size} bytes, over the limit of {limit}"
        raise InvalidInputError(where, reason) from None
    except ObjectNotFoundError:
        raise InvalidInputError(where, f"upload {upload_id!r} is gone (it expired before the job ran)") from None


def _check_mask(originals: Mapping[str, tuple[str, Image.Image]]) -> None:
    if "image" not in originals or "mask" not in originals:
        return  # a stored one passed this check when it was stored
    image, mask = images.upright_size(originals["image"][1]), images.upright_size(originals["mask"][1])
    if image != mask:
        raise InvalidInputError(
            "mask_image", f"must be the size of image ({image[0]}×{image[1]}); it is {mask[0]}×{mask[1]}"
        )


def _normalize(path: str, name: str, image: Image.Image, request: JobRequest) -> Image.Image:
    role = _ROLES.get(name, "control")
    try:
        return images.normalize(image, role=role, width=request.width, height=request.height)
    except (OSError, ValueError) as exc:  # e.g. a pixel mode Pillow cannot convert
        raise InvalidInputError(path, f"cannot be converted for use ({exc})") from None
