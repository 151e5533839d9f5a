"""Real storage servers for tests and benchmarks: SeaweedFS (S3, checks SigV4), moto, Azurite and fake-gcs-server.

One module per server (`seaweedfs`, `moto_s3`, `azurite`, `fake_gcs`), each with a context manager usable outside
pytest (bench/storage.py uses them) and a thin session-scoped fixture that starts it once per test session on free
loopback ports. tests/conftest.py registers this package as a pytest plugin, so every test can ask for the fixtures
by name. Binaries are found on PATH, next to `sys.executable`, or under `<repo>/.tools/node_modules/.bin`
(process.py).
"""

from __future__ import annotations

from tests.emulators.azurite import AzureServer, azurite, azurite_server
from tests.emulators.fake_gcs import GcsServer, fake_gcs, fake_gcs_server
from tests.emulators.moto_s3 import moto_s3, moto_s3_server
from tests.emulators.process import EmulatorError, find_binary, free_ports
from tests.emulators.s3 import S3Server
from tests.emulators.seaweedfs import s3_store_url, seaweedfs, seaweedfs_server
from tests.emulators.signatures import tamper_signature

__all__ = [
    "AzureServer",
    "EmulatorError",
    "GcsServer",
    "S3Server",
    "azurite",
    "azurite_server",
    "fake_gcs",
    "fake_gcs_server",
    "find_binary",
    "free_ports",
    "moto_s3",
    "moto_s3_server",
    "s3_store_url",
    "seaweedfs",
    "seaweedfs_server",
    "tamper_signature",
]
