"""Cloud-agnostic object storage: protocols, a registry of backends by URL scheme, and presigned links (downloads
and uploads).

`import storage` imports no cloud SDK; each backend imports its own when a store is built.
"""

from storage.azure import AzureBlobStore
from storage.base import (
    DEFAULT_EXPIRY,
    MAX_EXPIRY,
    BoundedReader,
    Lister,
    ObjectInfo,
    ObjectStore,
    Presigner,
    PutData,
    get_at_most,
)
from storage.credentials import StorageCredentials
from storage.errors import (
    InvalidExpiryError,
    InvalidKeyError,
    InvalidMetadataError,
    InvalidSignatureError,
    NotSupportedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageConfigError,
    StorageError,
    StoragePermissionError,
)
from storage.expiry import check_expiry
from storage.gcs import GcsStore
from storage.local import LocalStore
from storage.metadata import validate_metadata
from storage.object_keys import validate_key
from storage.registry import FullStore, PresigningStore, open_store
from storage.s3 import S3Store
from storage.signing import LinkSigner
from storage.transfer import download_prefix
from storage.uploads import DEFAULT_UPLOAD_EXPIRY, PresignedUpload, UploadSigner

# Plain sorted(), as tests/test_imports.py pins it for every package, not ruff's constants-first order.
__all__ = [  # noqa: RUF022
    "AzureBlobStore",
    "BoundedReader",
    "DEFAULT_EXPIRY",
    "DEFAULT_UPLOAD_EXPIRY",
    "FullStore",
    "GcsStore",
    "InvalidExpiryError",
    "InvalidKeyError",
    "InvalidMetadataError",
    "InvalidSignatureError",
    "LinkSigner",
    "Lister",
    "LocalStore",
    "MAX_EXPIRY",
    "NotSupportedError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectTooLargeError",
    "PresignedUpload",
    "Presigner",
    "PresigningStore",
    "PutData",
    "S3Store",
    "StorageConfigError",
    "StorageCredentials",
    "StorageError",
    "StoragePermissionError",
    "UploadSigner",
    "check_expiry",
    "download_prefix",
    "get_at_most",
    "open_store",
    "validate_key",
    "validate_metadata",
]
