"""An on-disk cache of harvested activation blocks: one safetensors shard per
block and a manifest naming what was harvested and each shard's checksum.

A cache is only reused when its manifest matches the harvest exactly; a shard
whose bytes do not match its checksum fails loudly instead of training on
garbage. Several ranks may write one cache at once: each merges its shards
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

MANIFEST = "manifest.json"
SHARD = re.compile(r"block_(\d{6,})\.safetensors")

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
            stored = json.loads(manifest.read_text())
            if stored["description"] != description:
                raise ValueError(
                    f"Activation cache {self.folder} was written for {stored['description']}, "
                    f"not {description}. Use another --cache-dir or delete this one."
                )
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
        return cls(folder, json.loads(manifest.read_text())["description"])

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
                self.checksums = {**json.loads(manifest.read_text())["shards"], **self.checksums}
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
