"""The storage package's errors: SDK errors are translated into these at each backend's edge."""

from __future__ import annotations


class StorageError(Exception):
    """Root of every error the storage package raises."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """No object under that key."""


class ObjectTooLargeError(StorageError, ValueError):
    """The object holds more bytes than the reader would take (`get_at_most`); nothing more was read."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(f"{key!r} holds {size} bytes, over the limit of {limit}")
        self.key, self.size, self.limit = key, size, limit


class StoragePermissionError(StorageError, PermissionError):
    """The credentials may not do that."""


class StorageConfigError(StorageError, ValueError):
    """A storage URL or setting is malformed, or an optional dependency is missing."""


class InvalidKeyError(StorageError, ValueError):
    """An object key is empty, too long, or could escape the store's root."""


class InvalidMetadataError(StorageError, ValueError):
    """User metadata has a name or value that not every backend can store."""


class InvalidExpiryError(StorageError, ValueError):
    """A presigned URL was asked for with an expiry that is not positive or is too long."""


class NotSupportedError(StorageError):
    """The backend cannot do that."""


class InvalidSignatureError(StorageError, PermissionError):
    """A signed link was tampered with or has expired."""
