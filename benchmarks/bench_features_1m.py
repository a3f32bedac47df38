"""Peak memory of the feature-statistics pass over 1M tokens.

The per-latent state does not depend on the model, so this uses a random
2-layer model of the embedded model's width (d_model 576) and a random
4,608-latent TopK SAE: the pass reads 1,048,576 tokens (8,192 contexts of
128) of Shakespeare. Prints wall time, tokens/s and peak RSS at 1/8 and at
all of the tokens (the ratio shows memory does not grow with tokens).

    python benchmarks/bench_features_1m.py [--contexts 8192]
"""

import argparse
import resource
import time

import torch

import saes  # noqa: F401
from interp.dictionary import DictionaryConfig, architecture
from interp.analysis.features import compute_feature_stats
from interp.model import load_model


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--contexts", type=int, default=8192)
    args = p.parse_args()
    torch.set_num_threads(2)
    model = load_model("tiny:n_layers=2,d_model=576,n_heads=9,d_mlp=1536,n_ctx=128")
    hook = "blocks.1.hook_resid_post"
    sae = architecture("topk")(DictionaryConfig(arch="topk", d_in=576, d_dict=4608, k=32, hook_in=hook))
    with torch.no_grad():
        sae.W_enc.normal_(0, 576 ** -0.5)
        sae.W_dec.copy_(sae.W_enc.T)
    for contexts in (args.contexts // 8, args.contexts):
        start = time.time()
        stats = compute_feature_stats(model, sae, contexts=contexts, batch_size=32)
        wall = time.time() - start
        tokens = stats.meta["tokens_seen"]
        print(f"{tokens:,} tokens: {wall:.0f} s, {tokens / wall:,.0f} tokens/s, peak RSS so far {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
