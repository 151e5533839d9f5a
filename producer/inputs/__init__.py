"""Image inputs on the producer side, one module per concern: `limits` (settings and limits), `uploads` (upload ids
and their grants), `submission` (the API's checks), `fetch` (URLs through the SSRF guard), `images` (decode, check,
normalize) and `resolve` (a job's inputs, fetched once and kept under `inputs/<job>/`).

Importable by the worker without torch; Pillow is imported only by the functions that decode images. The worker
calls `producer.inputs.resolve.resolve_inputs` when it prepares a job and catches
`producer.errors.InvalidInputError` (`error_code` `invalid_input`) to fail the job without a retry. This package
exports only its limits, which `producer.settings` mixes in: the other modules import the webhooks package and the
API's batches, which import the settings.
"""

from .limits import InputLimits, InputSettings

__all__ = ["InputLimits", "InputSettings"]
