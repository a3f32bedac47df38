"""W1 / W3 through another library's public API; runs inside the temporary venv of compare_libraries.py.

    python library_runner.py --library sae-lens|sparsify --workload W1|W3 --rounds N [--bf16]
prints one JSON line: {"library", "workload", "tokens_per_s", "floor_tokens_per_s"}, the
floor being the encoder GEMM alone, timed in turns with the step (common.best_times)
so that ratios across processes survive a shared CPU.

Each W1 step repeats what the library's own trainer does per batch (without
logging, dead-latent statistics beyond what the trainer always computes, or
AuxK: no latent is dead yet), with torch.optim.Adam as its trainer builds it.
--bf16 runs the step (or the encode + decode) under CPU bf16 autocast, as
bench_train.py --bf16 runs ours.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAPES, best_times, gemm_floor_call, synthetic_activations, use_device  # noqa: E402

S = SHAPES


def sae_lens_w1():
    from sae_lens.saes.sae import TrainStepInput
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=S.d_in, d_sae=S.d_dict, k=S.k))
    opt = torch.optim.Adam(sae.parameters(), lr=S.lr, betas=(0.9, 0.999))
    fired = torch.zeros(S.d_dict)

    def step(x):  # SAETrainer._train_step
        out = sae.training_forward_pass(
            TrainStepInput(sae_in=x, coefficients={}, dead_neuron_mask=None, n_training_steps=0, is_logging_step=False)
        )
        with torch.no_grad():
            fired.add_(out.feature_acts.bool().float().sum(0))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    return step


def sae_lens_w3():
    from sae_lens.saes.topk_sae import TopKSAE, TopKSAEConfig

    sae = TopKSAE(TopKSAEConfig(d_in=S.d_in, d_sae=S.d_dict, k=S.k))
    return lambda x: sae.decode(sae.encode(x))


def sparsify_coder():
    if torch.get_default_device().type != "cuda":
        os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")  # its Triton decoder needs CUDA
    from sparsify import SparseCoder, SparseCoderConfig

    return SparseCoder(S.d_in, SparseCoderConfig(num_latents=S.d_dict, k=S.k))


def sparsify_w1():
    sae = sparsify_coder()
    opt = torch.optim.Adam(sae.parameters(), lr=S.lr)

    def step(x):  # Trainer.fit, loss_fn="fvu", Adam
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        sae.set_decoder_norm_to_unit_norm()

    return step


def sparsify_w3():
    sae = sparsify_coder()

    def run(x):
        acts, indices, _ = sae.encode(x)
        return sae.decode(acts, indices)

    return run


STEPS = {("sae-lens", "W1"): sae_lens_w1, ("sae-lens", "W3"): sae_lens_w3,
         ("sparsify", "W1"): sparsify_w1, ("sparsify", "W3"): sparsify_w3}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--library", choices=["sae-lens", "sparsify"], required=True)
    ap.add_argument("--workload", choices=["W1", "W3"], required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="under bf16 autocast")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    use_device(args.device)
    step = STEPS[(args.library, args.workload)]()

    def fn(x):
        with torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.bf16):
            return step(x)

    if args.workload == "W1":
        batches = synthetic_activations(4 * S.batch, S.d_in).split(S.batch)
        state = {"i": 0}

        def call():
            fn(batches[state["i"] % len(batches)])
            state["i"] += 1

        tokens = S.batch
    else:
        x = synthetic_activations(S.n_infer, S.d_in)

        def call():
            with torch.inference_mode():
                for batch in x.split(S.batch):
                    fn(batch)

        tokens = S.n_infer
    best = best_times({"step": call, "floor": gemm_floor_call()}, args.rounds)
    result = {"library": args.library, "workload": args.workload, "tokens_per_s": tokens / best["step"],
              "floor_tokens_per_s": S.batch / best["floor"]}
    print(json.dumps(result))

if __name__ == "__main__":
    main()
