from collections import Counter

import pytest
import torch

from interp.activations import ActivationStore
from interp.data import take_contexts

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
