"""Presigned uploads, one module per backend: S3 POST policies, Azure write SAS, GCS V4 signed PUTs, local HMAC."""

from storage.uploads.base import DEFAULT_UPLOAD_EXPIRY, PresignedUpload, UploadSigner

__all__ = ["DEFAULT_UPLOAD_EXPIRY", "PresignedUpload", "UploadSigner"]
