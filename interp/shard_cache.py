"""An on-disk cache of harvested activation blocks: one safetensors shard per
block and a manifest naming what was harvested and each shard's checksum.

A cache is only reused when its manifest matches the harvest exactly; a shard
whose bytes do not match its checksum fails loudly instead of training on
garbage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load, save

from interp.config import write_atomic_text

MANIFEST = "manifest.json"


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

    def _name(self, block: int) -> str:
        return f"block_{block:06d}.safetensors"

    def __contains__(self, block: int) -> bool:
        return self._name(block) in self.checksums and (self.folder / self._name(block)).exists()

    def read(self, block: int) -> dict[str, torch.Tensor]:
        name = self._name(block)
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
        write_atomic_text(self.folder / MANIFEST, json.dumps({"description": self.description, "shards": self.checksums}, indent=1))
