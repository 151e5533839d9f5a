"""Fetching a model or LoRA from its source into a staging directory, and checking what arrived.

The cache (`gpu_worker.cache`) calls these under its install lock, into a temporary folder it renames into place
once `verify_pipeline_dir` / `verify_lora_dir` pass. Every failure is translated here: nothing at the source is a
`ModelNotFoundError`, something there that is broken or unreadable is a `ModelLoadError`.

From the Hub only what diffusers loads is downloaded: `model_index.json`, then for each component it names (less
the safety checker, which is never loaded) its configs and tokenizer files and its safetensors weights in one
precision (the `fp16` variant where the worker runs in float16 and the repo ships one). Single-file checkpoints,
pickled `.bin` weights, EMA variants, images and folders `model_index.json` does not name (SDXL's `vae_1_0/`) are
skipped, which for a typical SD repository is most of its bytes.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import shutil
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gpu_worker.errors import ModelLoadError, ModelNotFoundError, TransientError
from gpu_worker.refs import ModelRef
from storage.base import ObjectInfo
from storage.credentials import StorageCredentials

log = logging.getLogger(__name__)

MODEL_INDEX = "model_index.json"
FP16_VARIANT = "fp16"
#: Components the worker never loads (outputs are not filtered): `from_pretrained` is given None for them, so their
#: files (SD 1.5's safety checker: 0.6 GB in fp16, 1.2 GB in fp32) are neither downloaded nor counted.
UNLOADED_COMPONENTS = ("feature_extractor", "safety_checker")
_CONFIG_SUFFIXES = (".json", ".txt", ".model")  # configs, tokenizer vocab/merges, sentencepiece models
# `name[-00001-of-00002][.variant].safetensors`
_WEIGHTS = re.compile(r"(?P<stem>[^.]+)(?:\.(?P<variant>[A-Za-z0-9_-]+))?\.safetensors")  # fullmatch, not `$`
# The index of sharded weights: `name.safetensors.index[.variant].json` (or `.bin.index.json`, never loaded).
_WEIGHTS_INDEX = re.compile(r"[^.]+\.(?P<format>safetensors|bin)\.index(?:\.(?P<variant>[A-Za-z0-9_-]+))?\.json")
_SHARD = re.compile(r"-\d{5}-of-\d{5}\Z")


def loaded_components(index: Mapping[str, Any]) -> list[str]:
    """The components of `model_index.json` that a load reads from disk: those with a (library, class) spec, less
    the `UNLOADED_COMPONENTS`. A `[null, null]` spec is an optional component the repository does not ship."""
    return sorted(
        name
        for name, spec in index.items()
        if not name.startswith("_")
        and isinstance(spec, list)
        and len(spec) == 2
        and None not in spec
        and name not in UNLOADED_COMPONENTS
    )


def read_index(path: Path, name: str) -> dict[str, Any]:
    """The `model_index.json` in folder `path` (named `name` in messages), which must describe a pipeline."""
    index_path = path / MODEL_INDEX
    if not index_path.is_file():
        raise ModelNotFoundError(f"{name}: not a diffusers pipeline (it has no {MODEL_INDEX})")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{name}: unreadable {MODEL_INDEX} ({first_line(exc)})") from exc
    if not isinstance(index, dict) or "_class_name" not in index:
        raise ModelLoadError(f"{name}: {MODEL_INDEX} does not describe a pipeline")
    return index


def select_hub_files(files: Iterable[str], *, index: Mapping[str, Any], fp16: bool) -> list[str]:
    """The files of a pipeline repository that a diffusers load reads, in one precision.

    `files` are the repository's paths and `index` its `model_index.json`: only the folders of
    `loaded_components(index)` are taken (SDXL's `vae_1_0/` and the like are not), each with its configs and
    tokenizer files and its safetensors weights (and their shard index) in one variant: `fp16` where `fp16` is
    asked for and the component has it, else the plain files (or the fp16 ones when there are no others).
    """
    components = set(loaded_components(index))
    chosen = [MODEL_INDEX]
    weights: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for name in files:
        folder, _, filename = name.rpartition("/")
        if folder not in components:
            continue  # top-level files (single-file checkpoints, README, samples) and folders nothing loads
        weight_index = _WEIGHTS_INDEX.fullmatch(filename)
        if weight_index:
            if weight_index["format"] == "safetensors":
                weights[folder].append((name, weight_index["variant"]))
        elif filename.endswith(_CONFIG_SUFFIXES):
            chosen.append(name)
        elif _WEIGHTS.fullmatch(filename):
            weights[folder].append((name, weight_variant(filename)))
    for candidates in weights.values():
        chosen.extend(pick_variant(candidates, fp16=fp16))
    return sorted(set(chosen))


def pick_variant(candidates: Iterable[tuple[str, str | None]], *, fp16: bool) -> list[str]:
    """Of one component's (file, variant) weights, those of the variant a load reads (see `select_hub_files`)."""
    candidates = list(candidates)
    fp16_files = [name for name, variant in candidates if variant == FP16_VARIANT]
    plain_files = [name for name, variant in candidates if variant is None]
    return (fp16_files if fp16 and fp16_files else plain_files) or fp16_files


def weight_variant(filename: str) -> str | None:
    """The variant of a safetensors weights file (`fp16` for `model.fp16.safetensors` and its shards), or None."""
    match = _WEIGHTS.fullmatch(filename)
    if not match or not match["variant"]:
        return None
    return _SHARD.sub("", match["variant"])  # transformers names shards `model.fp16-00001-of-00002.safetensors`


def weights_bytes(path: Path, *, fp16: bool) -> int:
    """Bytes of the safetensors weights a load of the pipeline in `path` reads: its loaded components' files in
    the precision `select_hub_files` picks. The estimate of its device memory before loading."""
    try:
        index = read_index(path, str(path))
    except (ModelNotFoundError, ModelLoadError):
        return 0
    files = [file.relative_to(path).as_posix() for file in path.glob("*/*.safetensors")]
    chosen = select_hub_files(files, index=index, fp16=fp16)
    return sum((path / name).stat().st_size for name in chosen if name.endswith(".safetensors"))


def download_hub(
    ref: ModelRef, staging: Path, *, fp16: bool, kind: str, concurrency: int, max_bytes: int | None = None
) -> None:
    """Download a Hub repository's loadable files into `staging` (huggingface_hub reads HF_TOKEN itself).

    For a pipeline (`kind` "model"): the repository's file list and `model_index.json` first (pinned to one
    commit, so that a branch moving meanwhile cannot mix two versions), then what `select_hub_files` picks from
    them; for a LoRA ("lora") or a ControlNet or IP-Adapter ("adapter"), what `lora_files` or `adapter_files`
    pick from the list; in every case once their listed sizes add up to at most `max_bytes`
    (`SDQ_MAX_DOWNLOAD_GB`)."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    try:
        info = HfApi().model_info(ref.location, revision=ref.revision, files_metadata=max_bytes is not None)
        files = [sibling.rfilename for sibling in info.siblings or ()]
        sizes = {sibling.rfilename: sibling.size or 0 for sibling in info.siblings or ()}
        commit = info.sha or ref.revision
        if kind == "lora" and ref.subpath is None:
            try:
                wanted = lora_files(files)
            except ModelLoadError as exc:
                raise ModelLoadError(f"LoRA {ref}: {exc}") from None
        elif kind != "model":
            wanted = adapter_files(files, ref.subpath)
            if not wanted:
                raise ModelNotFoundError(f"no {ref.subpath or 'safetensors'} file in the repository")
        elif MODEL_INDEX not in files:
            raise ModelNotFoundError(f"not a diffusers pipeline repository (it has no {MODEL_INDEX})")
        else:
            hf_hub_download(ref.location, MODEL_INDEX, revision=commit, local_dir=staging)
            wanted = select_hub_files(files, index=read_index(staging, str(ref)), fp16=fp16)
        if max_bytes is not None and sum(sizes.get(name, 0) for name in wanted) > max_bytes:
            raise ModelLoadError(
                f"{ref}: larger than this worker downloads (SDQ_MAX_DOWNLOAD_GB={max_bytes / 1e9:g}); nothing copied"
            )
        snapshot_download(
            ref.location, revision=commit, local_dir=staging, allow_patterns=wanted, max_workers=concurrency
        )
        if kind != "model" and ref.subpath:
            _hoist(staging, _root_of(files, ref.subpath))
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"{ref}: {exc}") from exc
    except ModelLoadError:
        raise
    except Exception as exc:
        raise translate_hub_error(ref, exc) from exc


def lora_files(files: Iterable[str]) -> list[str]:
    """What a LoRA named by its repository alone fetches from the repository's `files`: the one weights file the
    loader would read (`lora_weights_file`: top level only, diffusers' `pytorch_lora_weights.safetensors` first,
    else the only one) and the JSON beside it, never the training checkpoints and other LoRAs in its folders.
    Raises `ModelNotFoundError` where there is none and `ModelLoadError` where the choice is the job's to make."""
    top = [name for name in files if "/" not in name]
    weights = sorted(name for name in top if name.endswith(".safetensors"))
    if not weights:
        raise ModelNotFoundError("no .safetensors weights at the top of the repository")
    preferred = [name for name in weights if name.endswith("pytorch_lora_weights.safetensors")]
    if not preferred and len(weights) > 1:
        raise ModelLoadError(
            f"{len(weights)} safetensors files at the top of the repository, none pytorch_lora_weights: name the one"
            " to load as org/name/file.safetensors; nothing copied"
        )
    return [(preferred or weights)[0], *(name for name in top if name.endswith(".json"))]


def adapter_files(files: Iterable[str], subpath: str | None) -> list[str]:
    """What a LoRA, ControlNet or IP-Adapter download fetches from a Hub repository's `files`: its safetensors
    weights and JSON configs; under `subpath` only, when the reference names a folder inside the repository; the
    file itself and the `image_encoder/` folder beside it (an IP-Adapter's), when it names a file."""
    files = list(files)
    plain_dirs = {posixpath.dirname(n) for n in files if n.endswith(".safetensors") and weight_variant(n) is None}
    loadable = [  # a precision variant beside plain weights is never what the loader reads: not fetched
        name
        for name in files
        if name.endswith((".safetensors", ".json"))
        and not (weight_variant(name) is not None and posixpath.dirname(name) in plain_dirs)
    ]
    if subpath is None:
        return loadable
    if subpath in files:
        encoder = f"{posixpath.dirname(subpath)}/image_encoder/".lstrip("/")
        return [subpath, *(name for name in loadable if name.startswith(encoder))]
    return [name for name in loadable if name.startswith(subpath.rstrip("/") + "/")]


def _root_of(files: Iterable[str], subpath: str) -> str:
    """The folder a subpath download is rooted at: the folder named, or the one holding the file named."""
    return posixpath.dirname(subpath) if subpath in set(files) else subpath.rstrip("/")


def _hoist(staging: Path, root: str) -> None:
    """Make `staging/root` the top of `staging` (what the loaders read), dropping huggingface_hub's bookkeeping."""
    if not root:
        return
    inner = staging / root
    hoisted = staging.with_name(staging.name + ".hoist")
    inner.rename(hoisted)
    shutil.rmtree(staging)
    hoisted.rename(staging)


def translate_hub_error(ref: ModelRef, exc: BaseException) -> Exception:
    """`ModelNotFoundError` for a repo, revision or file that is not there (or a Hub that cannot be reached)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    not_found = (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
        ConnectionError,
        TimeoutError,
    )
    reason = first_line(exc)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, not_found) or type(seen).__name__ in ("ConnectError", "ConnectTimeout"):
            return ModelNotFoundError(f"{ref}: not found on the Hugging Face Hub or in the worker's cache ({reason})")
        seen = seen.__cause__ or seen.__context__
    return ModelLoadError(f"{ref}: download from the Hugging Face Hub failed ({type(exc).__name__}: {reason})")


def download_storage(
    ref: ModelRef,
    staging: Path,
    *,
    concurrency: int,
    credentials: StorageCredentials | None = None,
    kind: str = "model",
    max_bytes: int | None = None,
) -> None:
    """Copy the objects under the storage URL `ref` names that a load of a `kind` (`model`, `lora`, `adapter`)
    reads into `staging`, keeping their relative paths; see `storage_plan` for what is chosen and capped.

    `credentials` (a `storage.StorageCredentials`) are the worker's explicit storage secrets, if any. Errors name
    `ref` and what is wrong, never what the prefix holds: a job may name any prefix the worker can read."""
    from storage import (
        InvalidKeyError,
        NotSupportedError,
        ObjectNotFoundError,
        StorageConfigError,
        StorageError,
        StoragePermissionError,
        open_store,
    )
    from storage.transfer import download_prefix

    try:
        store = open_store(ref.location, credentials=credentials)
        download_prefix(
            store,
            "",
            staging,
            concurrency=concurrency,
            plan=lambda listing: storage_plan(listing, ref, kind=kind, max_bytes=max_bytes),
        )
    except ObjectNotFoundError as exc:
        raise ModelNotFoundError(f"{ref}: no objects under this storage prefix") from exc
    except (StorageConfigError, NotSupportedError) as exc:
        raise ModelNotFoundError(f"{ref}: this worker cannot read that storage URL ({type(exc).__name__})") from exc
    except (StoragePermissionError, InvalidKeyError) as exc:
        raise ModelLoadError(f"{ref}: download failed ({type(exc).__name__})") from exc
    except StorageError as exc:  # an outage or a dropped connection: worth another try later, maybe elsewhere
        raise TransientError(f"{ref}: download failed ({type(exc).__name__})") from exc


def storage_plan(listing: list[ObjectInfo], ref: ModelRef, *, kind: str, max_bytes: int | None) -> list[ObjectInfo]:
    """Of a prefix's listing (keys relative to it), what a `kind` load reads, checked before anything is copied:

    - a LoRA: its top-level `.safetensors` and `.json` files (diffusers reads nothing else), at least one weights;
    - a pipeline: a `model_index.json` at the top, then its configs, tokenizer files and safetensors weights;
    - an adapter (ControlNet, IP-Adapter): its safetensors weights and configs, at any depth;

    and all of it at most `max_bytes` (`SDQ_MAX_DOWNLOAD_GB`), from the sizes listed."""
    label = "LoRA " if kind == "lora" else ""
    if kind == "lora":
        chosen = [i for i in listing if "/" not in i.key and i.key.endswith((".safetensors", ".json"))]
        if not any(i.key.endswith(".safetensors") for i in chosen):
            raise ModelNotFoundError(f"LoRA {ref}: no .safetensors weights at the top of this storage prefix")
    else:
        if kind == "model" and not any(i.key == MODEL_INDEX for i in listing):
            raise ModelNotFoundError(f"{ref}: not a diffusers pipeline (it has no {MODEL_INDEX})")
        chosen = [i for i in listing if i.key.endswith((".safetensors", *_CONFIG_SUFFIXES))]
        if not any(i.key.endswith(".safetensors") for i in chosen):
            raise ModelNotFoundError(f"{label}{ref}: no .safetensors weights under this storage prefix")
    total = sum(i.size for i in chosen)
    if max_bytes is not None and total > max_bytes:
        raise ModelLoadError(
            f"{label}{ref}: larger than this worker downloads (SDQ_MAX_DOWNLOAD_GB={max_bytes / 1e9:g}); nothing copied"
        )
    return chosen


def verify_pipeline_dir(path: Path, name: str) -> None:
    """Check that `path` holds a diffusers pipeline: a readable `model_index.json` and a folder per loaded component."""
    index = read_index(path, name)
    missing = [component for component in loaded_components(index) if not (path / component).is_dir()]
    if missing:
        raise ModelLoadError(f"{name}: incomplete pipeline, missing component folder(s) {', '.join(sorted(missing))}")


def lora_weights_file(path: Path, name: str) -> str:
    """The safetensors file of the LoRA in `path` (diffusers' default name preferred), relative to `path`."""
    # Top level only, as diffusers and the Hub lay LoRAs out (and a job naming `/` must not walk the filesystem).
    files = sorted(p.name for p in path.glob("*.safetensors"))
    if not files:
        raise ModelNotFoundError(f"LoRA {name}: no .safetensors weights in it")
    preferred = [f for f in files if f.endswith("pytorch_lora_weights.safetensors")]
    if preferred:
        return preferred[0]
    if len(files) > 1:  # their names stay out of the message: a job may name any folder the worker can read
        raise ModelLoadError(f"LoRA {name}: {len(files)} safetensors files, none pytorch_lora_weights; keep one")
    return files[0]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (SDK errors can run to pages)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
