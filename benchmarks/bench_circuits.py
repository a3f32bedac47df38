"""Cost of attribution-graph rows (interp.circuits.LocalReplacement.edges) on the embedded model.

    ours      one batched backward pass (`is_grads_batched`) for B targets at once
    baseline  B backward passes, one target each (what a per-target loop costs), same process

Both compute identical rows (checked). Transcoders are random TopK (k=32, width 8 x d_model) for
every layer: the cost does not depend on what they learned. Also prints the seconds to build the
whole graph of a 16-token prompt (BOS + 15) with the default 1024 expanded features.

Run: python benchmarks/bench_circuits.py [--targets 64] [--rounds 3]
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import saes  # noqa: E402,F401
from common import best_times  # noqa: E402
from interp.circuits import LocalReplacement, Target, attribute  # noqa: E402
from interp.circuits.graph import prompt_tokens  # noqa: E402
from interp.dictionary import architecture  # noqa: E402
from interp.model import load_model  # noqa: E402
from transcoders import transcoder_config  # noqa: E402

PROMPT = "Then Romeo and Juliet went to the church, and Romeo gave a ring to"


def random_transcoders(model, k=32):
    out = {}
    for layer in range(model.cfg.n_layers):
        tc = architecture("topk")(transcoder_config(model.cfg.d_model, layer, k=k))
        tc.init_from_data(torch.zeros(1, model.cfg.d_model), torch.zeros(1, model.cfg.d_model),
                          torch.Generator().manual_seed(layer))
        with torch.no_grad():
            tc.W_dec.mul_(0.05)
        out[layer] = tc
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--targets", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    model = load_model()
    transcoders = random_transcoders(model)
    tokens = prompt_tokens(model, PROMPT)
    rep = LocalReplacement(model, transcoders, tokens)
    active = rep.active_features()
    late = active[active[:, 0] >= model.cfg.n_layers // 2]
    pick = late[torch.randperm(len(late), generator=torch.Generator().manual_seed(0))[: args.targets]]
    targets = [Target("feature", *row.tolist()) for row in pick]
    batched = rep.edges(targets, active)
    looped = torch.cat([rep.edges([t], active) for t in targets])
    assert torch.allclose(batched, looped, atol=1e-4, rtol=1e-4)
    times = best_times({"batched": lambda: rep.edges(targets, active),
                        "looped": lambda: [rep.edges([t], active) for t in targets]}, rounds=args.rounds)
    print(f"{len(tokens)} tokens, {len(active)} active features; rows for {len(targets)} targets in layers "
          f">= {model.cfg.n_layers // 2}")
    print(f"batched {times['batched']:.2f} s, one-by-one {times['looped']:.2f} s: {times['looped'] / times['batched']:.1f}x")
    start = time.perf_counter()
    graph = attribute(model, transcoders, PROMPT, " Juliet", progress=False)
    print(f"whole graph (1024 features expanded, batch 64): {time.perf_counter() - start:.1f} s "
          f"({graph.meta['active_features']} active features)")


if __name__ == "__main__":
    main()
