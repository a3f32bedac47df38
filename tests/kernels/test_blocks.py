"""The CPU encoder's block height: measured once per shape, fixed by $INTERP_CPU_BLOCK_ROWS, and never a
change in the codes (the invariant that lets a measurement choose it)."""

import pytest
import torch

from interp.kernels import blocks, topk_encode
from interp.kernels.encode import _select_in_blocks


@pytest.fixture(autouse=True)
def fresh_choices(monkeypatch):
    monkeypatch.delenv(blocks.ENV_VAR, raising=False)
    monkeypatch.setattr(blocks, "_chosen", {})


@pytest.fixture
def clock(monkeypatch):
    """A fake clock for blocks.fastest: calls advance it by what they declare."""
    now = [0.0]
    monkeypatch.setattr(blocks, "CLOCK", lambda: now[0])

    def spend(seconds):
        now[0] += seconds

    return spend


def test_fastest_picks_the_quickest_call(clock):
    costs = {1: [1, 7, 6], 2: [9, 5, 2], 3: [1, 3, 4]}  # seconds per turn; the first turn is not timed
    calls = {key: (lambda key=key: clock(costs[key].pop(0))) for key in costs}
    assert blocks.fastest(calls) == 2  # best timed turns: 6, 2, 3


def test_block_rows_times_every_candidate_once_per_shape(monkeypatch, clock):
    timed = []

    def select(x, W, b, k, rows):
        timed.append(rows)
        clock(1.0 if rows == 64 else 2.0)  # the 64-row block is the fast one

    monkeypatch.setattr(blocks, "CANDIDATE_BYTES", (2**13, 2**14, 2**15))  # 32, 64, 128 rows of 64 float32 latents
    assert blocks.candidate_rows(64, torch.float32) == [32, 64, 128]
    W, b = torch.zeros(8, 64), torch.zeros(64)
    assert blocks.block_rows(torch.zeros(1000, 8), W, b, 4, select) == 64
    assert sorted(set(timed)) == [32, 64, 128] and len(timed) == 3 * (blocks.ROUNDS + 1)
    assert blocks.block_rows(torch.zeros(5000, 8), W, b, 4, select) == 64 and len(timed) == 3 * (blocks.ROUNDS + 1)
    assert blocks.block_rows(torch.zeros(10, 8), W, b, 4, select) == 10  # one block: nothing to measure
    timed.clear()
    assert blocks.block_rows(torch.zeros(100, 8), W, b, 5, select) == 64  # fewer rows than the largest block:
    assert sorted(set(timed)) == [32, 64, 100]  # the candidates below 100 rows, and all 100 in one block


def test_environment_fixes_the_block(monkeypatch):
    x, W, b = torch.zeros(10**4, 2), torch.zeros(2, 8192), torch.zeros(8192)
    monkeypatch.setenv(blocks.ENV_VAR, "128")
    assert blocks.block_rows(x, W, b, 32, None) == 128
    monkeypatch.setenv(blocks.ENV_VAR, "many")
    with pytest.raises(ValueError, match="positive number of rows"):
        blocks.block_rows(x, W, b, 32, None)


@pytest.mark.parametrize("d_dict,k", [(1024, 32), (96, 5)])
def test_any_block_height_gives_the_same_codes(d_dict, k):
    """A row's pre-activations are the same bits in any (even) block of 16+ rows, so the measured choice cannot
    change results. Blocks of a few rows would (MKL takes other paths for them): the encoder never cuts them."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 64, generator=g)
    W = torch.randn(d_dict, 64, generator=g).t()
    b = 0.1 * torch.randn(d_dict, generator=g)
    whole = _select_in_blocks(x, W, b, k, 300)
    for rows in (16, 64, 150, 299):  # 299: two blocks of 150
        values, indices = _select_in_blocks(x, W, b, k, rows)
        assert torch.equal(values.sort(1).values, whole[0].sort(1).values)
        assert torch.equal(indices.sort(1).values, whole[1].sort(1).values)


def test_block_buffer_is_reused_and_grows():
    a = blocks.block_buffer(4, 8, torch.float32)
    b = blocks.block_buffer(2, 8, torch.float32)
    assert b.data_ptr() == a.data_ptr() and b.shape == (2, 8)
    c = blocks.block_buffer(10, 8, torch.float32)
    assert c.shape == (10, 8)
    assert blocks.block_buffer(3, 8, torch.float64).dtype == torch.float64


def test_measured_blocks_encode_as_one_block(monkeypatch):
    """The end-to-end path: a measured block height (forced small here) gives topk_encode's codes in one block."""
    x = torch.randn(200, 16)
    W, b = torch.randn(16, 256), torch.zeros(256)
    monkeypatch.setenv(blocks.ENV_VAR, "1000")
    want = topk_encode(x, W, b, 8)
    monkeypatch.delenv(blocks.ENV_VAR)
    monkeypatch.setattr(blocks, "CANDIDATE_BYTES", (2**15, 2**16))  # blocks of 32 and 64 rows of 256 float32 latents
    got = topk_encode(x, W, b, 8)
    assert len(blocks._chosen) == 1
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
