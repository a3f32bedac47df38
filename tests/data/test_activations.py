from collections import Counter

import pytest
import torch

from interp.data.activations import ActivationStore, CacheStore
from interp.data.tokens import take_contexts
from interp.data.shard_cache import ShardCache

HOOK = "blocks.0.hook_resid_post"


def store(tiny, **kw):
    args = dict(source="shakespeare", n_ctx=32, batch_size=64, block_contexts=8, forward_batch=4, seed=1)
    return ActivationStore(tiny, {"x": HOOK}, **{**args, **kw})


def test_harvest_equals_run_with_cache_without_bos(tiny):
    s = store(tiny)
    tokens = take_contexts(tiny, "shakespeare", "train", 32, 8)
    rows = s.harvest(tokens)["x"]
    _, cache = tiny.run_with_cache(tokens)
    assert torch.allclose(rows, cache[HOOK][:, 1:].reshape(-1, 32), atol=1e-6)  # one BOS per context, at position 0


def rows(t):
    return Counter(map(tuple, t.tolist()))


def test_stream_serves_every_row_once(tiny):
    s = store(tiny)  # 8 contexts x 31 rows = 248 rows a block; 64-row batches leave rows to carry
    served = [b["x"] for _, b in zip(range(8), s)]  # 3 from block 0, 4 from block 1, then into block 2
    block0, block1 = s.block_rows(0)["x"], store(tiny).block_rows(1)["x"]
    assert rows(torch.cat(served[:3])) <= rows(block0)
    assert rows(torch.cat(served[:7])) + rows(s.carry["x"]) == rows(torch.cat([block0, block1]))


def test_resume_from_state_gives_the_same_stream(tiny):
    a = store(tiny)
    it = iter(a)
    for _ in range(5):
        next(it)
    state, tensors = a.state_dict(), a.state_tensors()
    expected = [next(it)["x"] for _ in range(6)]
    b = store(tiny)
    b.load_state(state, tensors)
    got = [batch["x"] for _, batch in zip(range(6), b)]
    assert all(torch.equal(x, y) for x, y in zip(expected, got))


def test_disk_cache_is_reused_and_verified(tiny, tmp_path):
    first = store(tiny, cache_dir=tmp_path).block_rows(0)["x"]
    assert torch.equal(store(tiny, cache_dir=tmp_path).block_rows(0)["x"], first)
    shard = tmp_path / "block_000000.safetensors"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        store(tiny, cache_dir=tmp_path).block_rows(0)
    with pytest.raises(ValueError, match="was written for"):
        store(tiny, cache_dir=tmp_path, n_ctx=16)


def test_non_finite_activations_fail(tiny):
    import copy

    broken = copy.deepcopy(tiny)
    with torch.no_grad():
        broken.blocks[0].mlp.W_out[0, 0] = torch.nan
    with pytest.raises(ValueError, match="Non-finite"):
        store(broken).block_rows(0)


def test_unknown_hook_lists_close_names(tiny):
    with pytest.raises(ValueError, match="blocks.0.hook_resid_post"):
        ActivationStore(tiny, {"x": "blocks.0.hook_resid_pots"})


# --- reading a finished cache, shuffled across shards ------------------------
SIZES = [40, 37, 40, 29, 40, 33, 40]  # rows per shard; uneven, so rows carry from pool to pool


def synthetic_cache(folder):
    """Shard s's row i is [s, i, noise]: every row says where it came from."""
    cache = ShardCache(folder, {"model": "none", "hooks": {"x": "synthetic"}, "gradients": {}, "source": "synthetic",
                                "split": "train", "n_ctx": 0})
    for s, n in enumerate(SIZES):
        cache.write(s, {"x": torch.cat([torch.full((n, 1), float(s)), torch.arange(n).float()[:, None], torch.randn(n, 2)], 1)})
    return torch.cat([cache.read(s)["x"] for s in range(len(SIZES))])


def one_pass(store):
    """Every batch served during the first pass over the cache (the rows left over are in store.carry)."""
    served = []
    for batch in store:
        if store.block == store.pools_per_pass:  # the first batch of the second pass
            return served
        served.append(batch["x"])


def test_cache_batches_mix_shards_and_a_pass_serves_every_row_once(tmp_path):
    everything = synthetic_cache(tmp_path)
    s = CacheStore(tmp_path, batch_size=16, mix=3, seed=5)
    served = one_pass(s)
    assert all(len(b[:, 0].unique()) > 1 for b in served)  # every batch draws on several shards
    assert len(served[0][:, 0].unique()) == 3  # the first pool's three shards, all in its first batch
    assert rows(torch.cat(served)) + rows(s.carry["x"]) == rows(everything) and len(s.carry["x"]) < 16
    # the shard order is drawn per pass and per seed, and the same seed gives the same stream
    assert [s.pool_shards(b) for b in range(3)] != [s.pool_shards(b) for b in range(3, 6)]
    assert s.pool_shards(0) != CacheStore(tmp_path, mix=3, seed=6).pool_shards(0)
    again = [b["x"] for _, b in zip(range(len(served)), CacheStore(tmp_path, batch_size=16, mix=3, seed=5))]
    assert all(torch.equal(a, b) for a, b in zip(served, again))


def test_cache_ranks_read_disjoint_shards_that_cover_the_cache(tmp_path):
    synthetic_cache(tmp_path)
    pools = [CacheStore(tmp_path, mix=2, shard=(r, 2)) for r in range(2)]
    mine = [sorted(b for p in range(s.pools_per_pass) for b in s.pool_shards(p)) for s in pools]
    assert not set(mine[0]) & set(mine[1]) and sorted(mine[0] + mine[1]) == list(range(len(SIZES)))


def test_cache_reading_resumes_at_a_shard_and_offset(tmp_path):
    synthetic_cache(tmp_path)
    a = CacheStore(tmp_path, batch_size=16, mix=2, seed=3)
    it = iter(a)
    for _ in range(9):  # into the second pool, with rows carried from the first
        next(it)
    assert a.block == 1 and a.served > 0 and a.carry is not None
    state, tensors = a.state_dict(), a.state_tensors()
    expected = [next(it)["x"] for _ in range(20)]  # on past the end of the first pass
    b = CacheStore(tmp_path, batch_size=16, mix=2, seed=3)
    b.load_state(state, tensors)
    assert all(torch.equal(x, y) for x, y in zip(expected, [batch["x"] for _, batch in zip(range(20), b)]))


def test_cache_store_reads_what_the_activation_store_wrote(tiny, tmp_path):
    writer = store(tiny, cache_dir=tmp_path)
    harvested = torch.cat([writer.block_rows(b)["x"] for b in range(3)])
    reader = CacheStore(tmp_path, batch_size=64, mix=3)
    assert reader.hooks == {"x": HOOK} and rows(reader.block_rows(0)["x"]) == rows(harvested)
    shard = tmp_path / "block_000001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-3] + b"xyz")
    with pytest.raises(ValueError, match="corrupt"):
        CacheStore(tmp_path, batch_size=64, mix=3).block_rows(0)
    with pytest.raises(FileNotFoundError, match="No activation cache"):
        CacheStore(tmp_path / "nowhere")


def test_ranks_writing_one_cache_keep_each_others_shards(tmp_path):
    a, b = (ShardCache(tmp_path, {"hooks": {}}) for _ in range(2))
    a.write(0, {"x": torch.zeros(2, 2)})
    b.write(1, {"x": torch.ones(2, 2)})
    assert ShardCache.open(tmp_path).blocks() == [0, 1]


def test_row_budget_reads_the_last_block_only_as_far_as_needed(tiny):
    # 8 contexts x 31 rows = 248 rows a block, 64-row batches: 5 batches = 320 rows = all of block 0 and 72 of block 1
    full = store(tiny)
    limited = store(tiny)
    limited.limit_rows(5 * 64)
    forwards = []
    run = limited._forward
    limited._forward = lambda tokens: forwards.append(len(tokens)) or run(tokens)
    got = [b["x"] for _, b in zip(range(5), limited)]
    assert len(limited._memo[2]["x"]) == 72  # block 0's 248 rows give 3 batches and carry 56: 72 more make 2 batches
    assert forwards == [4, 4, 4]  # block 0 whole (2 chunks of 4 contexts), block 1 one chunk (3 contexts hold 72 rows)
    assert torch.equal(limited.block_rows(1, 72)["x"], full.block_rows(1)["x"][:72])  # a prefix of the whole block
    served = rows(torch.cat(got))
    assert served == rows(torch.cat([full.block_rows(0)["x"], full.block_rows(1)["x"][:72]]))  # every budgeted row once


def test_row_budget_resumes_exactly_inside_the_last_block(tiny):
    a = store(tiny)
    a.limit_rows(6 * 64)
    it = iter(a)
    for _ in range(4):  # three batches from block 0, the fourth from block 1
        next(it)
    state, tensors = a.state_dict(), a.state_tensors()
    expected = [next(it)["x"] for _ in range(2)]
    b = store(tiny)
    b.limit_rows(6 * 64)
    b.load_state(state, tensors)
    got = [batch["x"] for _, batch in zip(range(2), b)]
    assert all(torch.equal(x, y) for x, y in zip(expected, got))  # the same computation: bit-equal
    old = dict(state, row_budget=None)  # a checkpoint from before budgets resumes on whole blocks
    c = store(tiny)
    c.load_state(old, tensors)
    assert c.row_budget is None
