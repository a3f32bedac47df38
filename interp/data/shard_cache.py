"""An on-disk cache of harvested activation blocks: one safetensors shard per
block and a manifest naming what was harvested and each shard's checksum.

A cache is only reused when its manifest matches the harvest exactly, and the
description names the source by content (for files: size and SHA-256 of the
bytes read; the embedded corpus: its package version; hub datasets: name,
config and revision), so rewriting a corpus file is never answered with the
old activations. Recorded modification times are informative only. A shard
whose bytes do not match its checksum fails loudly instead of training on
garbage; so does a manifest with a missing field or a shard name it does not
expect. Several ranks may write one cache at once: each merges its shards
into the manifest under a file lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load, save

from interp.config import write_atomic_text
from interp.errors import UserError

MANIFEST = "manifest.json"
SHARD = re.compile(r"block_(\d{6,})\.safetensors")
SHA256 = re.compile(r"[0-9a-f]{64}")
INFORMATIVE = ("mtime_ns",)  # recorded in descriptions, not compared: touching a file does not change its bytes

try:
    import fcntl
except ImportError:  # Windows: one writer per cache
    fcntl = None


class ShardCache:
    def __init__(self, folder: str | Path, description: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.description = description
        manifest = self.folder / MANIFEST
        if manifest.exists():
            stored = read_manifest(manifest)
            if _comparable(stored["description"]) != _comparable(description):
                raise UserError(f"Activation cache {self.folder} was written for {_differences(stored['description'], description)}. "
                                "Use another --cache-dir, or delete this one to harvest again.")
            self.checksums: dict[str, str] = stored["shards"]
        else:
            self.checksums = {}
            self._write_manifest()

    @classmethod
    def open(cls, folder: str | Path) -> ShardCache:
        """An existing cache, whatever it was harvested from (its description is in the manifest)."""
        manifest = Path(folder) / MANIFEST
        if not manifest.exists():
            raise FileNotFoundError(f"No activation cache at {folder} (no {MANIFEST}); write one first with "
                                    f"`interp train --cache-dir {folder}` (or ActivationStore(cache_dir=...)).")
        return cls(folder, read_manifest(manifest)["description"])

    def blocks(self) -> list[int]:
        """The blocks the manifest lists, in order."""
        if not self.checksums:
            raise ValueError(f"The activation cache {self.folder} holds no shards yet.")
        return sorted(int(SHARD.fullmatch(name).group(1)) for name in self.checksums)

    def _name(self, block: int) -> str:
        return f"block_{block:06d}.safetensors"

    def __contains__(self, block: int) -> bool:
        return self._name(block) in self.checksums and (self.folder / self._name(block)).exists()

    def read(self, block: int) -> dict[str, torch.Tensor]:
        name = self._name(block)
        if name not in self.checksums or not (self.folder / name).exists():
            raise ValueError(f"Activation cache shard {self.folder / name} is missing or not in the manifest; "
                             "re-harvest it (run the job that wrote the cache again with the same --cache-dir).")
        data = (self.folder / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != self.checksums[name]:
            raise ValueError(f"Activation cache shard {self.folder / name} is corrupt (checksum mismatch); delete it to re-harvest.")
        return load(data)

    def write(self, block: int, tensors: dict[str, torch.Tensor]) -> None:
        name = self._name(block)
        data = save({k: v.contiguous().cpu() for k, v in tensors.items()})
        tmp = self.folder / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(self.folder / name)
        self.checksums[name] = hashlib.sha256(data).hexdigest()
        self._write_manifest()

    def _write_manifest(self) -> None:
        """Merge our shards with those other writers added since we read the manifest."""
        with self._locked():
            manifest = self.folder / MANIFEST
            if manifest.exists():
                self.checksums = {**read_manifest(manifest)["shards"], **self.checksums}
            write_atomic_text(manifest, json.dumps({"description": self.description, "shards": self.checksums}, indent=1))

    @contextlib.contextmanager
    def _locked(self):
        if fcntl is None:
            yield
            return
        with open(self.folder / ".manifest.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def read_manifest(path: Path) -> dict:
    """The manifest at `path`, checked: {"description": {...}, "shards": {block_NNNNNN.safetensors: sha256}}."""
    def bad(what: str) -> UserError:
        return UserError(f"Activation cache manifest {path} is invalid: {what}. It was not written by interp or was "
                         "edited; delete the cache folder to harvest again, or use another --cache-dir.")

    try:
        stored = json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise bad(f"not JSON ({err})") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("description"), dict) \
            or not isinstance(stored.get("shards"), dict):
        raise bad("expected an object with a 'description' object and a 'shards' object")
    for name, checksum in stored["shards"].items():
        if not SHARD.fullmatch(name):
            raise bad(f"unexpected shard name {name!r} (expected block_NNNNNN.safetensors)")
        if not isinstance(checksum, str) or not SHA256.fullmatch(checksum):
            raise bad(f"shard {name} has no SHA-256 checksum (got {checksum!r})")
    return stored


def _comparable(value):
    """`value` without the informative fields (INFORMATIVE), at any depth."""
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items() if k not in INFORMATIVE}
    if isinstance(value, list):
        return [_comparable(v) for v in value]
    return value


def _differences(stored: dict, wanted: dict) -> str:
    """'<key> X, not Y' for every top-level key that differs (keys only one side has included)."""
    keys = [k for k in {**stored, **wanted} if _comparable(stored.get(k)) != _comparable(wanted.get(k))]
    return "; ".join(_changed_files(stored[k], wanted[k]) if _has_files(stored.get(k), wanted.get(k))
                     else f"{k} {_short(stored.get(k, 'missing'))}, not {_short(wanted.get(k, 'missing'))}" for k in keys)


def _has_files(*values) -> bool:
    return all(isinstance(v, dict) and isinstance(v.get("files"), list) for v in values)


def _changed_files(stored: dict, wanted: dict) -> str:
    """Which source files differ in content (size or SHA-256), appeared or disappeared."""
    before, now = ({f.get("path"): _comparable(f) for f in d["files"]} for d in (stored, wanted))
    changed = [p for p in {**before, **now} if before.get(p) != now.get(p)]
    return f"other contents of the source files: {', '.join(map(str, changed[:5]))} changed since it was harvested"


def _short(value, limit: int = 300) -> str:
    text = json.dumps(_comparable(value))
    return text if len(text) <= limit else text[:limit] + "..."
