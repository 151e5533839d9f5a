"""What the API checks about a job's images before it records the job, and how it rewrites them.

A data URL is checked (bytes, decode, pixels) and stored as an upload, so that the record and the queue message
carry an id instead of the image. An upload id must be the caller's and its bytes must have arrived. A URL gets the
SSRF guard's checks that need no DNS (the full check, with resolution, runs when the worker fetches it). Where both
an image and its mask are known here, their sizes must match. Every problem is an `InvalidInputError` naming the
field, which the API answers with 422. The same checks run again when the worker prepares the job.
"""

from __future__ import annotations

from ..batch_body import BatchValidationError
from ..batches import validate_items
from ..errors import InvalidInputError, WebhookUrlError
from ..jobs import BatchRequest, ImageRef, JobRequest
from ..webhooks.ssrf import UrlPolicy, check_url_shape
from . import images
from .limits import InputLimits
from .uploads import Uploads

#: The request fields that hold images.
INPUT_FIELDS = frozenset({"image", "mask_image", "controlnets", "ip_adapter"})
_Checked = tuple[ImageRef, "tuple[int, int] | None"]


class InputGate:
    """Checks and rewrites the image inputs of submitted jobs."""

    def __init__(self, uploads: Uploads, limits: InputLimits, url_policy: UrlPolicy) -> None:
        self.uploads = uploads
        self.limits = limits
        self.url_policy = url_policy

    def prepare(
        self, request: JobRequest, tenant: str | None, *, memo: dict[ImageRef, _Checked] | None = None
    ) -> JobRequest:
        """`request` with every data URL replaced by an upload of `tenant`; raises `InvalidInputError`.

        `memo` carries what was checked across the jobs of one batch, so a shared image is checked once."""
        if not request.has_inputs:
            return request
        memo = {} if memo is None else memo
        sizes: dict[str, tuple[int, int]] = {}
        replaced: dict[str, ImageRef] = {}
        for path, _, ref in request.input_images():
            if ref not in memo:
                memo[ref] = self._check(path, ref, tenant)
            new_ref, size = memo[ref]
            if size is not None:
                sizes[path] = size
            if new_ref is not ref:
                replaced[path] = new_ref
        image, mask = sizes.get("image"), sizes.get("mask_image")
        if image is not None and mask is not None and image != mask:
            raise InvalidInputError(
                "mask_image", f"must be the size of image ({image[0]}×{image[1]}); it is {mask[0]}×{mask[1]}"
            )
        return _with_refs(request, replaced) if replaced else request

    def prepare_batch(self, batch: BatchRequest, tenant: str | None) -> BatchRequest:
        """`batch` with its items' images checked and data URLs stored as uploads; raises `BatchValidationError`
        naming `items.<index>.<field>`. A batch without images is returned as it is, unvalidated."""
        if not (INPUT_FIELDS & set(batch.defaults)) and not any(INPUT_FIELDS & set(item) for item in batch.items):
            return batch
        memo: dict[ImageRef, _Checked] = {}
        items = list(batch.items)
        for index, request in enumerate(validate_items(batch)):
            try:
                prepared = self.prepare(request, tenant, memo=memo)
            except InvalidInputError as exc:
                raise BatchValidationError([{"field": f"items.{index}.{exc.field}", "message": exc.reason}]) from None
            if prepared is not request:
                items[index] = {**items[index], **prepared.model_dump(mode="json", include=set(INPUT_FIELDS))}
        return batch.model_copy(update={"items": items})

    def _check(self, path: str, ref: ImageRef, tenant: str | None) -> _Checked:
        if ref.upload is not None:
            return ref, self._check_upload(f"{path}.upload", ref.upload, tenant)
        inline = ref.inline()
        if inline is None:
            assert ref.url is not None
            try:
                check_url_shape(ref.url, self.url_policy)
            except WebhookUrlError as exc:
                raise InvalidInputError(f"{path}.url", f"refused: {exc}") from None
            return ref, None
        content_type, data = inline
        if len(data) > self.limits.max_inline_bytes:
            raise InvalidInputError(
                f"{path}.url",
                f"the data URL holds {len(data)} bytes, over the limit of {self.limits.max_inline_bytes}"
                " (SDQ_MAX_INLINE_IMAGE_BYTES); upload it instead (POST /v1/uploads)",
            )
        found = images.probe(data, field=f"{path}.url", max_pixels=self.limits.max_image_pixels)
        upload_id = self.uploads.store_inline(tenant, content_type, data)
        return ImageRef(upload=upload_id), (found.width, found.height)

    def _check_upload(self, field: str, upload_id: str, tenant: str | None) -> tuple[int, int]:
        from storage import ObjectNotFoundError

        if self.uploads.owned(upload_id, tenant) is None:
            raise InvalidInputError(field, f"no upload {upload_id!r} (unknown, expired, or not this API key's tenant)")
        try:
            info = self.uploads.head(upload_id)
            cached = self.uploads.probed(upload_id, info.etag)
            if cached is not None:
                return cached
            if info.size > self.limits.max_upload_bytes:
                raise InvalidInputError(
                    field, f"upload {upload_id!r} holds {info.size} bytes, over {self.limits.max_upload_bytes}"
                )
            data = self.uploads.read(upload_id)
        except ObjectNotFoundError:
            raise InvalidInputError(
                field, f"upload {upload_id!r} has no bytes yet: send the file to its upload URL first"
            ) from None
        found = images.probe(data, field=field, max_pixels=self.limits.max_image_pixels)
        if info.etag:
            self.uploads.remember_probe(upload_id, info.etag, found.width, found.height)
        return found.width, found.height


def _with_refs(request: JobRequest, replaced: dict[str, ImageRef]) -> JobRequest:
    """`request` with the references at the given field paths swapped (the models are frozen: copies)."""
    update: dict[str, object] = {}
    if "image" in replaced:
        update["image"] = replaced["image"]
    if "mask_image" in replaced:
        update["mask_image"] = replaced["mask_image"]
    if any(path.startswith("controlnets.") for path in replaced):
        update["controlnets"] = tuple(
            unit.model_copy(update={"image": replaced.get(f"controlnets.{index}.image", unit.image)})
            for index, unit in enumerate(request.controlnets)
        )
    if "ip_adapter.image" in replaced and request.ip_adapter is not None:
        update["ip_adapter"] = request.ip_adapter.model_copy(update={"image": replaced["ip_adapter.image"]})
    return request.model_copy(update=update)
