"""A sweep of E dictionaries trained as one stack against the same E trained one after another.

Both sides run the training loop's own trainees (interp.training.loop.Trainee, one per
dictionary, and interp.training.stacked.StackedTrainee for the stack) on the same
batches, with the same step (forward, loss, backward, clipping, Adam, decoder
renorm, firing counts), and take turns in one process (common.best_times), so
the ratio holds on a shared machine.

    S1  TopK, d_in 512, d_dict 8192, batch 4096 (W1's shapes), a sweep of k: 16, 24, 32, 48
    S2  ReLU + L1, same widths, batch 1024 (memory), a sweep of l1_coeff: 1, 2, 5, 10
    S3  TopK, d_in 128, d_dict 1024, batch 1024, k 8, 16, 24, 32: small enough that per-call costs count
    S4  S1 with k 32 for every member (a seed or lr sweep): no member is padded to the largest k

Run: python benchmarks/bench_stacked.py [--rounds 3] [--workloads S1,S2,S3,S4] [--members 4]
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import best_times, machine_line, synthetic_activations, use_device  # noqa: E402

import saes  # noqa: E402,F401 - registers the architectures
from interp.dictionary import DictionaryConfig, architecture  # noqa: E402
from interp.training.stacked import StackedTrainee  # noqa: E402
from interp.training.loop import TrainConfig, Trainee  # noqa: E402

WORKLOADS = {  # name: (arch, d_in, d_dict, batch, field, one value per member)
    "S1": ("topk", 512, 8192, 4096, "k", (16, 24, 32, 48)),
    "S2": ("relu", 512, 8192, 1024, "l1_coeff", (1.0, 2.0, 5.0, 10.0)),
    "S3": ("topk", 128, 1024, 1024, "k", (8, 16, 24, 32)),
    "S4": ("topk", 512, 8192, 4096, "k", (32, 32, 32, 32)),
}


def sweep(arch, d_in, d_dict, field, values, batch):
    """E freshly initialised dictionaries (same init as train(): one seed, init_from_data)."""
    device = torch.get_default_device()
    out = []
    with torch.device("cpu"):  # the same init on every device
        x = synthetic_activations(batch, d_in, seed=1).cpu()
        for v in values:
            d = architecture(arch)(DictionaryConfig(arch=arch, d_in=d_in, d_dict=d_dict, dead_tokens=1_000_000, **{field: v}))
            d.init_from_data(x, x, torch.Generator().manual_seed(0))
            out.append(d.to(device))
    return out


def calls(name: str, members: int):
    """(separate, stacked) closures: one training step of every member on the next batch."""
    arch, d_in, d_dict, batch, field, values = WORKLOADS[name]
    values = (values * members)[:members]
    cfg = TrainConfig(lr=1e-4)
    batches = synthetic_activations(4 * batch, d_in).split(batch)
    singles = [Trainee(d, cfg) for d in sweep(arch, d_in, d_dict, field, values, batch)]
    stack = StackedTrainee(dict(enumerate(sweep(arch, d_in, d_dict, field, values, batch))), cfg)
    state = {"separate": 0, "stacked": 0}

    def separate():
        x = batches[state["separate"] % len(batches)]
        state["separate"] += 1
        for t in singles:
            t.step(x, x, {}, cfg.lr, cfg)

    def stacked():
        x = batches[state["stacked"] % len(batches)]
        state["stacked"] += 1
        stack.step(x, x, cfg.lr, cfg)

    return separate, stacked, batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="timed turns of each side (fewer = faster, noisier)")
    ap.add_argument("--workloads", default="S1,S2,S3,S4")
    ap.add_argument("--members", type=int, default=4, help="E, the dictionaries in the sweep")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    use_device(args.device)
    print(machine_line())
    print(f"E={args.members} dictionaries, {args.threads} threads; tokens/s counts each batch once per dictionary")
    print(f"{'workload':9s} {'separate':>10s} {'stacked':>10s} {'stacked / separate':>19s}")
    for name in args.workloads.split(","):
        separate, stacked, batch = calls(name, args.members)
        best = best_times({"separate": separate, "stacked": stacked}, args.rounds)
        tps = {side: args.members * batch / s for side, s in best.items()}
        print(f"{name:9s} {tps['separate']:10.0f} {tps['stacked']:10.0f} {tps['stacked'] / tps['separate']:18.2f}x")


if __name__ == "__main__":
    main()
