"""An export bundle's file: a tar archive of a version's manifest, weights and ONNX scorer.

``write_bundle`` runs in a worker (JobManager.run_work): it loads and checks the version's
files, exports the ONNX scorer (which loads torch and, for encoder models, traces the
transformer: seconds of CPU) and writes the archive. Its entries get fixed owners, modes and
times, so the same version exports to the same bytes wherever its ONNX export is deterministic.

What the bundle holds, in archive order:

- ``manifest.json``: what the version is and how to use each file (services/export_manifest.py);
- ``model.safetensors`` and ``spec.json``: the version's own files, byte for byte;
- ``model.onnx`` where the model has an ONNX form (engines/onnx_scorer.py);
- ``ngram_features.py`` for models that take hashed n-grams; ``tokenizer/`` for encoder models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agent_training_server.artifacts import load_version_files
from agent_training_server.cancellation import raise_if_cancelled
from agent_training_server.domain import AgentVersion
from agent_training_server.services.export_manifest import BUNDLE_FORMAT, manifest_of

if TYPE_CHECKING:
    from agent_training_server.engines.onnx_scorer import OnnxScorer

log = logging.getLogger(__name__)

BUNDLE_NAME = "bundle.tar"
STORED_FILES = ("model.safetensors", "spec.json")
"""The version's own files (engines/registry.py's WEIGHTS_FILE and SPEC_FILE), copied as stored."""
ONNX_FILE = "model.onnx"
FEATURES_FILE = "ngram_features.py"
TOKENIZER_FOLDER = "tokenizer"


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A written bundle: where it is and what the header says of it."""

    path: Path
    size_bytes: int
    files: list[str]
    onnx: bool


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One file of the archive: its name and how to read its bytes."""

    name: str
    size: int
    open: Callable[[], IO[bytes]]


def write_bundle(
    data_dir: Path, version: AgentVersion, folder: Path, progress: Any = None
) -> Bundle:
    """Write ``version``'s bundle into ``folder`` (which the caller made and removes).

    ``data_dir`` is the folder the version's ``artifact_dir`` is relative to. Runs in a worker;
    ``progress`` (JobManager.run_work's) is not used: an export reports no progress.

    Raises:
        VersionDamaged: the version's files are missing, damaged or do not fit its model.
    """
    spec, tensors, _outputs = load_version_files(data_dir, version)
    raise_if_cancelled()
    scorer, reason = _onnx_scorer(version, spec, tensors)
    raise_if_cancelled()
    artifact = data_dir / version.artifact_dir
    entries = [_stored(artifact / name) for name in STORED_FILES]
    if scorer is not None:
        entries.append(_in_memory(ONNX_FILE, scorer.model))
        if scorer.ngram_settings is not None:
            entries.append(_in_memory(FEATURES_FILE, _features_source()))
        entries += [
            _in_memory(f"{TOKENIZER_FOLDER}/{name}", data)
            for name, data in scorer.tokenizer_files.items()
        ]
    digests = {entry.name: _sha256(entry) for entry in entries}
    manifest = manifest_of(version, spec, tensors, scorer, reason, digests)
    entries.insert(0, _in_memory("manifest.json", manifest))
    path = folder / BUNDLE_NAME
    # Created in the caller's folder, never making it: an export whose caller already left
    # (and removed the folder) fails here instead of leaving a file behind.
    with tarfile.open(path, "x", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            raise_if_cancelled()
            with entry.open() as source:
                archive.addfile(_info(entry, version.create_time), source)
    return Bundle(path, path.stat().st_size, [entry.name for entry in entries], scorer is not None)


def _onnx_scorer(
    version: AgentVersion, spec: dict[str, Any], tensors: dict[str, Any]
) -> tuple[OnnxScorer | None, str]:
    """(the ONNX scorer, "") or (None, why there is none)."""
    from agent_training_server.engines import onnx_scorer

    try:
        scorer = onnx_scorer.build(
            spec, tensors, version.behavior.temperature, version.behavior.disabled_outputs
        )
    except onnx_scorer.NotExportable as error:
        return None, str(error)
    except Exception:  # the exporter and onnx raise many kinds: the bundle goes without it
        log.exception("the ONNX export of version %s failed", version.version_id)
        return None, "the ONNX export failed (the server's log says why)"
    return scorer, ""


def _stored(path: Path) -> _Entry:
    return _Entry(path.name, path.stat().st_size, lambda: path.open("rb"))


def _in_memory(name: str, data: bytes) -> _Entry:
    return _Entry(name, len(data), lambda: io.BytesIO(data))


def _features_source() -> bytes:
    """The standalone n-gram features module, shipped so the bundle can be scored anywhere."""
    from agent_training_server.engines import ngram_features

    return Path(ngram_features.__file__).read_bytes()


def _sha256(entry: _Entry) -> str:
    hasher = hashlib.sha256()
    with entry.open() as source:
        while block := source.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest()


def _info(entry: _Entry, create_time: float) -> tarfile.TarInfo:
    """The entry's header: the version's creation time, no owner, readable by all."""
    info = tarfile.TarInfo(entry.name)
    info.size = entry.size
    info.mtime = int(create_time)
    info.mode = 0o644
    return info


__all__ = ["BUNDLE_FORMAT", "Bundle", "write_bundle"]
