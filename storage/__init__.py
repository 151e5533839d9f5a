"""Cloud-agnostic object storage: protocols, a registry of backends by URL scheme, and presigned links.

`import storage` imports no cloud SDK; each backend imports its own when a store is built.
"""

from storage.base import DEFAULT_EXPIRY, MAX_EXPIRY, ObjectInfo, ObjectStore, Presigner
from storage.errors import (
    InvalidExpiryError,
    InvalidKeyError,
    InvalidMetadataError,
    InvalidSignatureError,
    NotSupportedError,
    ObjectNotFoundError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
)
from storage.expiry import check_expiry
from storage.keys import validate_key
from storage.local import LocalStore
from storage.metadata import validate_metadata
from storage.registry import PresigningStore, open_store
from storage.s3 import S3Store
from storage.signing import LinkSigner

# Plain sorted(), as tests/test_imports.py pins it for every package, not ruff's constants-first order.
__all__ = [  # noqa: RUF022
    "DEFAULT_EXPIRY",
    "InvalidExpiryError",
    "InvalidKeyError",
    "InvalidMetadataError",
    "InvalidSignatureError",
    "LinkSigner",
    "LocalStore",
    "MAX_EXPIRY",
    "NotSupportedError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "Presigner",
    "PresigningStore",
    "S3Store",
    "StorageConfigError",
    "StorageError",
    "StoragePermissionError",
    "check_expiry",
    "open_store",
    "validate_key",
    "validate_metadata",
]
