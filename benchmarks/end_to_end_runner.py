"""One library's end-to-end job in its own process; bench_end_to_end.py starts it (ours and bare in the project's
environment, SAE-Lens and sparsify in the throwaway one, which does not have this toolkit).

    python end_to_end_runner.py --library bare|ours|sae-lens|sparsify --job JOB.json
JOB.json: {"hf_dir", "tokens_file" (safetensors, "tokens" [n, n_ctx], each context starting with BOS), "layer",
"k", "d_dict", "batch", "tokens", "device", "threads", "out"}. Prints one JSON line: {"library", "tokens",
"seconds", "tokens_per_s", "peak_rss_mb", "note"}; `seconds` covers the job (harvest and training), not the
model load. Tokens count activations the SAE trains on (positions that are not BOS).
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

CTX_PER_FORWARD = 32  # contexts per model forward, as ActivationStore's forward_batch


def load_tokens(job) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(job["tokens_file"])["tokens"]


def bare(job) -> tuple[int, float, str]:
    """The limit: our hooked model's forward to the hook's block and nothing else, over the same contexts."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from interp.model import load_model

    model = load_model(job["hf_dir"], job["device"])
    tokens = load_tokens(job)
    bos, done, start = tokens[0, 0].item(), 0, time.perf_counter()
    with torch.no_grad():
        for chunk in tokens.split(CTX_PER_FORWARD):
            if done >= job["tokens"]:
                break
            model(chunk.to(job["device"]), stop_at_layer=job["layer"] + 1)
            done += int((chunk != bos).sum())
    sync(job)
    return done, time.perf_counter() - start, "TransformerLens forward with stop_at_layer, 32 contexts per call"


def ours(job) -> tuple[int, float, str]:
    """What `interp train` runs: ActivationStore (harvest with stop_at_layer) + train() on one TopK SAE."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import saes  # noqa: F401
    from interp.data.activations import ActivationStore
    from interp.dictionary import DictionaryConfig, architecture
    from interp.model import load_model
    from interp.training.loop import TrainConfig, train

    model = load_model(job["hf_dir"], job["device"])
    hook = f"blocks.{job['layer']}.hook_resid_post"
    store = ActivationStore(model, {"x": hook}, source="shakespeare", n_ctx=128, batch_size=job["batch"], device=job["device"])
    torch.manual_seed(0)
    sae = architecture("topk")(DictionaryConfig(arch="topk", d_in=model.cfg.d_model, d_dict=job["d_dict"], k=job["k"],
                                                hook_in=hook, model=job["hf_dir"]))
    cfg = TrainConfig(tokens=job["tokens"], checkpoint_every=10**9)
    start = time.perf_counter()
    train([sae], store, cfg, Path(job["out"]) / "ours")
    sync(job)
    steps = cfg.steps(job["batch"])
    return steps * job["batch"], time.perf_counter() - start, "interp ActivationStore + train() (interp train without eval)"


def sync(job) -> None:
    if job["device"].startswith("cuda"):
        torch.cuda.synchronize()


RUNNERS = {"bare": bare, "ours": ours}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--library", required=True)
    ap.add_argument("--job", required=True)
    args = ap.parse_args()
    job = json.loads(Path(args.job).read_text())
    torch.set_num_threads(job["threads"])
    if args.library not in RUNNERS:
        from end_to_end_libraries import RUNNERS as MORE  # SAE-Lens and sparsify, in their own environment

        RUNNERS.update(MORE)
    tokens, seconds, note = RUNNERS[args.library](job)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"library": args.library, "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
                      "peak_rss_mb": peak, "note": note}))


if __name__ == "__main__":
    main()
