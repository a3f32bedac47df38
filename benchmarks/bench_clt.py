"""Time and memory of one training step of a cross-layer transcoder (CLT) against
the per-layer transcoders of the same width, k and batch, in the same process.

Both sides train on the same synthetic batches with the step the toolkit runs:
per-layer transcoders through the shared loop's `Trainee` (one per layer), the
CLT through `transcoders.clt_train._step` (one stacked fused TopK encode, one
sparse decode per source layer into all its target layers, Adam, clipping,
decoder renorm). They take turns round by round (common.best_times), so the
ratio holds on a shared machine. Memory is counted from the tensors a step
keeps: parameters, gradients and Adam's two moments (4x the parameters); a
CLT has sum_l (L - l) = L(L+1)/2 decoder blocks against L for per-layer ones.

Run: python benchmarks/bench_clt.py [--layers 30] [--d-model 576] [--d-dict 512] [--k 16] [--batch 512] [--rounds 3]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import best_times, machine_line, synthetic_activations  # noqa: E402

import saes  # noqa: E402,F401
from interp.dictionary import architecture  # noqa: E402
from interp.training.loop import TrainConfig, Trainee  # noqa: E402
from transcoders.clt import CLTConfig, CrossLayerTranscoder  # noqa: E402
from transcoders.clt_train import _step, init_from_data  # noqa: E402
from transcoders.config import transcoder_config  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--d-model", type=int, default=576)
    p.add_argument("--d-dict", type=int, default=512)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    L, d, f = args.layers, args.d_model, args.d_dict
    cfg = TrainConfig(lr=1e-4)
    xs = [synthetic_activations(args.batch, d, seed=l) for l in range(L)]
    ys = [synthetic_activations(args.batch, d, seed=100 + l) for l in range(L)]
    batch = {**{f"x{l}": xs[l] for l in range(L)}, **{f"target{l}": ys[l] for l in range(L)}}
    scales = {k: 1.0 for k in batch}
    per_layer = []
    for l in range(L):
        tc = architecture("topk")(transcoder_config(d, l, "topk", d_dict=f, k=args.k, aux_k=0, dead_tokens=10**9))
        tc.init_from_data(xs[l], ys[l], torch.Generator().manual_seed(0))
        per_layer.append(Trainee(tc, cfg, data_parallel=False))
    clt = CrossLayerTranscoder(CLTConfig(n_layers=L, d_model=d, d_dict=f, k=args.k))
    init_from_data(clt, torch.stack(xs, 1), torch.stack(ys, 1), 0)
    optimizer = torch.optim.Adam(clt.parameters(), lr=cfg.lr)

    def per_layer_step():
        for l, t in enumerate(per_layer):
            t.step(xs[l], ys[l], {}, cfg.lr, cfg)

    times = best_times({"per-layer": per_layer_step, "clt": lambda: _step(clt, optimizer, batch, scales, cfg, cfg.lr, False)},
                       args.rounds)
    mb = lambda params: 4 * sum(p.numel() * p.element_size() for p in params) / 2**20  # weights, grads, 2 Adam moments
    clt_mb, tc_mb = mb(clt.parameters()), mb(p for t in per_layer for p in t.dictionary.parameters())
    print(machine_line())
    print(f"L={L} d_model={d} d_dict={f}/layer k={args.k} batch={args.batch}")
    print(f"per-layer transcoders: {times['per-layer'] * 1e3:.0f} ms/step, {tc_mb:.0f} MiB weights+grads+Adam")
    print(f"CLT:                   {times['clt'] * 1e3:.0f} ms/step, {clt_mb:.0f} MiB weights+grads+Adam")
    print(f"ratio CLT / per-layer: time {times['clt'] / times['per-layer']:.2f}x, memory {clt_mb / tc_mb:.2f}x "
          f"(decoder blocks {L * (L + 1) // 2} vs {L})")


if __name__ == "__main__":
    main()
