"""The wire contract: everything that crosses a process boundary, one module per contract.

A `JobRequest` (requests.py) is what a client asks for, a `JobMessage` (checkpoints.py, with the checkpoint it may
carry) is what travels through Redis to a worker, and a `JobRecord` (records.py) is what the API reports back; a
submitted batch has its own models (batches.py) and so does a webhook delivery (events.py). All are frozen pydantic
models; the worker re-validates every message on entry, so a producer of another version cannot smuggle in a request
this version would refuse. The Redis hash a record is stored in is owned by `producer.jobhash`.
"""

from .batches import (
    MAX_BATCH_ITEMS,
    BatchCounts,
    BatchCreated,
    BatchJobPage,
    BatchRecord,
    BatchRequest,
    BatchStatus,
)
from .checkpoints import (
    CheckpointRef,
    JobMessage,
)
from .enums import (
    CONTRACT_VERSION,
    DEFAULT_WEBHOOK_EVENTS,
    ErrorCode,
    JobStatus,
    OutputFormat,
    Scheduler,
    TextEnum,
    WebhookEventType,
)
from .events import (
    WebhookEvent,
)
from .records import (
    JobError,
    JobPage,
    JobRecord,
    Output,
    Progress,
    Timings,
)
from .requests import (
    MAX_AREA_PX,
    MAX_GUIDANCE,
    MAX_IMAGES,
    MAX_LORA_SCALE,
    MAX_LORAS,
    MAX_METADATA_ITEMS,
    MAX_METADATA_KEY_CHARS,
    MAX_METADATA_VALUE_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_SIDE_PX,
    MAX_STEPS,
    MIN_SIDE_PX,
    JobRequest,
    LoraRequest,
    RefinerRequest,
    Side,
    is_job_id,
    new_job_id,
    output_key,
    validated_metadata,
)

__all__ = [
    "CONTRACT_VERSION",
    "DEFAULT_WEBHOOK_EVENTS",
    "MAX_AREA_PX",
    "MAX_BATCH_ITEMS",
    "MAX_GUIDANCE",
    "MAX_IMAGES",
    "MAX_LORAS",
    "MAX_LORA_SCALE",
    "MAX_METADATA_ITEMS",
    "MAX_METADATA_KEY_CHARS",
    "MAX_METADATA_VALUE_CHARS",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "MAX_SIDE_PX",
    "MAX_STEPS",
    "MIN_SIDE_PX",
    "BatchCounts",
    "BatchCreated",
    "BatchJobPage",
    "BatchRecord",
    "BatchRequest",
    "BatchStatus",
    "CheckpointRef",
    "ErrorCode",
    "JobError",
    "JobMessage",
    "JobPage",
    "JobRecord",
    "JobRequest",
    "JobStatus",
    "LoraRequest",
    "Output",
    "OutputFormat",
    "Progress",
    "RefinerRequest",
    "Scheduler",
    "Side",
    "TextEnum",
    "Timings",
    "WebhookEvent",
    "WebhookEventType",
    "is_job_id",
    "new_job_id",
    "output_key",
    "validated_metadata",
]
