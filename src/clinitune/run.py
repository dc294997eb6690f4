"""Run directories and manifests.

A run directory holds one artifact folder per stage. Each folder gets a ``manifest.json``
written last (so a folder without one is an interrupted stage) with:

- ``fingerprint``: a hash of the stage's recipe section, its input files' hashes and the
  fingerprints of the upstream stages it read. ``clinitune run`` skips a stage whose stored
  fingerprint equals the one it would produce now.
- ``inputs`` / ``outputs``: file hashes; ``counts``; library ``versions``; the recipe section.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from clinitune import __version__

MANIFEST = "manifest.json"
_LIBS = (
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "datasets",
    "pyarrow",
    "rouge-score",
    "gguf",
)


@dataclass(frozen=True)
class RunLayout:
    """Where each stage writes inside a run directory. One place knows these names."""

    root: Path

    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    def stage(self, name: str) -> Path:
        return self.root / "train" / name

    @property
    def generations(self) -> Path:
        return self.root / "generations"

    @property
    def evaluation(self) -> Path:
        return self.root / "eval"

    @property
    def metrics(self) -> Path:
        return self.root / "eval" / "metrics.json"

    @property
    def report(self) -> Path:
        return self.root / "report.html"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def library_versions() -> dict[str, str]:
    out = {"clinitune": __version__, "python": platform.python_version()}
    for lib in _LIBS:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    p = stage_dir / MANIFEST
    if not p.exists():
        return None
    return json.loads(p.read_text(encoding="utf-8"))


def fingerprint(stage: str, config: Any, inputs: Mapping[str, str], upstream: Iterable[str]) -> str:
    return sha256_json(
        {"stage": stage, "config": config, "inputs": dict(inputs), "upstream": sorted(upstream)}
    )


def is_up_to_date(stage_dir: Path, fp: str) -> bool:
    m = read_manifest(stage_dir)
    return m is not None and m.get("fingerprint") == fp


def write_manifest(
    stage_dir: Path,
    *,
    stage: str,
    fp: str,
    config: Any,
    inputs: Mapping[str, str],
    counts: Mapping[str, Any] | None = None,
    outputs: Iterable[Path] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "stage": stage,
        "fingerprint": fp,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": library_versions(),
        "config": config,
        "inputs": dict(inputs),
        "outputs": {
            os.path.relpath(p, stage_dir): sha256_file(p) for p in sorted(outputs) if p.is_file()
        },
        "counts": dict(counts or {}),
    }
    if extra:
        manifest.update(extra)
    write_json(stage_dir / MANIFEST, manifest)
    return manifest
