"""A trained model as bundles, one per party, each on the disk of the party that owns it.

A bundle is a directory of three files:

* ``weights.safetensors``: tensors only (safetensors runs no code when loaded);
* ``preprocessing.json``: the party's fitted preprocessing, per party whose columns the bundle
  encodes (:class:`~credit_data.saved_preprocessing.SavedPreprocessing`);
* ``model.json``: the manifest that explains the bundle: format, model id, party, role, config,
  columns, metrics, privacy spend, library versions and the SHA-256 of the other two files.

:func:`load_bundle` checks the manifest's hashes before it reads anything else and refuses a
directory holding any file the manifest does not list; nothing in a bundle is ever unpickled.

>>> import tempfile, torch
>>> with tempfile.TemporaryDirectory() as d:
...     path = write_bundle(Path(d) / "model", manifest={"model_id": "m1", "party": "lender",
...                         "role": "lender"}, weights={"w": torch.ones(2)}, preprocessing={})
...     bundle = load_bundle(path, party="lender")
...     bundle.weights["w"].tolist(), bundle.manifest["files"]["weights.safetensors"][:8] != ""
([1.0, 1.0], True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from credit_data.errors import DataError

FORMAT = 1
MANIFEST = "model.json"
WEIGHTS = "weights.safetensors"
PREPROCESSING = "preprocessing.json"
FILES = (WEIGHTS, PREPROCESSING)
LIBRARIES = ("credit-fl", "torch", "numpy", "pandas", "scikit-learn", "opacus", "flwr",
             "safetensors")


class BundleError(DataError):
    """A bundle is missing, edited, of another model or party, or not a bundle at all."""


@dataclass(frozen=True)
class Bundle:
    """A bundle read back and checked."""

    directory: Path
    manifest: dict[str, Any]
    weights: dict[str, torch.Tensor]
    preprocessing: dict[str, dict[str, Any]]

    @property
    def model_id(self) -> str:
        """The id every bundle of one trained model shares."""
        return str(self.manifest["model_id"])

    @property
    def party(self) -> str:
        """Whose bundle this is."""
        return str(self.manifest["party"])


def settings_json(settings: Any) -> dict[str, Any]:
    """Return a settings dataclass as a manifest holds it (enums as values, lists).

    >>> from models.settings import ModelSettings
    >>> settings_json(ModelSettings())["hidden"]
    [64, 32]
    """
    return {k: (v.value if hasattr(v, "value") else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(settings).items()}


def sha256_of(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries a bundle was written with."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def write_bundle(directory: Path, *, manifest: dict[str, Any],
                 weights: dict[str, torch.Tensor],
                 preprocessing: dict[str, dict[str, Any]]) -> Path:
    """Write a bundle to ``directory`` (replaced whole, never left half-written); return it.

    ``manifest`` needs ``model_id``, ``party`` and ``role``; the format, the time, the library
    versions and the files' hashes are added here.
    """
    for key in ("model_id", "party", "role"):
        if key not in manifest:
            raise ValueError(f"a bundle's manifest needs '{key}'")
    blobs = {WEIGHTS: save_safetensors({k: v.detach().contiguous().cpu()
                                        for k, v in weights.items()}),
             PREPROCESSING: _json_bytes(preprocessing)}
    full = {"format": FORMAT, **manifest,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "libraries": library_versions(),
            "files": {name: sha256_of(blob) for name, blob in blobs.items()}}
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name, blob in {**blobs, MANIFEST: _json_bytes(full)}.items():
            (staging / name).write_bytes(blob)
        os.chmod(staging, 0o700)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate keys {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and check ``model.json`` (format, required keys); the files are not checked."""
    path = directory / MANIFEST
    if not path.is_file():
        raise BundleError(f"{directory}: not a model bundle (no {MANIFEST}); a bundle is written "
                          "at the end of every training run")
    try:
        manifest = json.loads(path.read_text(), object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not a readable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: bundle format {manifest.get('format')!r} is not "
                          f"{FORMAT}, the one this version reads")
    for key in ("model_id", "party", "role", "files"):
        if key not in manifest:
            raise BundleError(f"{path}: the manifest has no '{key}'")
    return manifest


def load_bundle(directory: Path, *, party: str | None = None,
                model_id: str | None = None) -> Bundle:
    """Read a bundle after checking every file against the manifest's SHA-256.

    ``party`` and ``model_id``, when given, must match the manifest's: a bundle of another
    party or of another trained model is refused, as is a file the manifest does not list.
    """
    manifest = read_manifest(directory)
    listed = manifest["files"]
    if set(listed) != set(FILES):
        raise BundleError(f"{directory / MANIFEST}: lists files {sorted(listed)}, expected "
                          f"{list(FILES)}")
    extra = sorted(p.name for p in directory.iterdir() if p.name not in (*FILES, MANIFEST))
    if extra:
        raise BundleError(f"{directory}: file(s) {extra} are not part of the bundle (its "
                          "manifest does not list them); remove them or restore the bundle")
    blobs = {}
    for name in FILES:
        path = directory / name
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle")
        blob = path.read_bytes()
        if sha256_of(blob) != listed[name]:
            raise BundleError(f"{path}: SHA-256 differs from the manifest's: the file was edited "
                              "or replaced since training; restore the bundle")
        blobs[name] = blob
    if party is not None and manifest["party"] != party:
        raise BundleError(f"{directory}: a bundle of '{manifest['party']}', not of '{party}'")
    if model_id is not None and manifest["model_id"] != model_id:
        raise BundleError(f"{directory}: a bundle of model {manifest['model_id']}, not of "
                          f"model {model_id} (the lender's): bundles of different training "
                          "runs cannot score together (fingerprint mismatch)")
    try:
        weights = load_safetensors(blobs[WEIGHTS])
    except (SafetensorError, ValueError) as exc:
        raise BundleError(f"{directory / WEIGHTS}: not a safetensors file ({exc}); a bundle's "
                          "weights are never unpickled") from exc
    try:
        preprocessing = json.loads(blobs[PREPROCESSING], object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{directory / PREPROCESSING}: not readable JSON: {exc}") from exc
    return Bundle(directory, manifest, weights, preprocessing)


def main(argv: list[str] | None = None) -> int:
    """``python -m models.bundle verify <dir> ...``: check each bundle; exit 1 if any fails."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] != "verify":
        print("usage: python -m models.bundle verify <bundle dir> ...", file=sys.stderr)
        return 2
    failed = 0
    for name in args[1:]:
        try:
            bundle = load_bundle(Path(name))
        except BundleError as exc:
            print(f"FAILED {name}: {exc}")
            failed += 1
            continue
        m = bundle.manifest
        print(f"ok {name}: {m['party']} ({m['role']}) of model {m['model_id']}, trained "
              f"{m.get('created', '?')}; {len(bundle.weights)} tensors, files "
              + ", ".join(f"{k} {v[:12]}" for k, v in m["files"].items()))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
