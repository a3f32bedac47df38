"""W1 (TopK training) and W3 (inference) tokens/s: this toolkit against SAE-Lens and EleutherAI sparsify.

SAE-Lens (`sae-lens`) and sparsify (`eai-sparsify`) are installed into a
throwaway virtual environment under a temporary directory, never into the
project. `torch==2.13.0` goes in first and is pinned by a constraint file, so
the libraries run on the same torch as we do. Each library runs in its own
process (library_runner.py), one after the other; our numbers come from this
process, in the same run.

--bf16 adds both workloads under CPU bf16 autocast for all three (the GEMMs in
bf16, on AMX where the CPU has it), still normalised by each process's fp32 floor.

Run: python benchmarks/compare_libraries.py [--rounds 3] [--venv DIR to reuse one] [--bf16]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_train  # noqa: E402
from common import SHAPES, machine_line, use_device  # noqa: E402

TORCH_PIN = "torch==2.13.0"
LIBRARIES = {"sae-lens": "sae-lens", "sparsify": "eai-sparsify"}  # runner name -> package


def python_of(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def make_env(env_dir: Path) -> Path:
    """Create (or reuse) a venv with torch pinned and both libraries installed; returns its python."""
    py = python_of(env_dir)
    if not py.exists():
        print(f"creating a virtual environment in {env_dir}", flush=True)
        venv.create(env_dir, with_pip=True)
    check = "import sae_lens, sparsify, torch; assert torch.__version__.startswith('2.13.0')"
    if subprocess.run([py, "-c", check], capture_output=True).returncode != 0:
        pin = env_dir / "constraints.txt"
        pin.write_text(TORCH_PIN + "\n")
        print(f"installing {TORCH_PIN}, then {', '.join(LIBRARIES.values())} (a few minutes)", flush=True)
        for args in ([TORCH_PIN], ["-c", pin, *LIBRARIES.values()]):
            proc = subprocess.run([py, "-m", "pip", "install", "--quiet", *args], capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"pip install {' '.join(map(str, args))} failed:\n{proc.stderr[-3000:]}")
    return py


def run_library(py: Path, library: str, workload: str, rounds: int, threads: int, bf16: bool = False, device: str = "cpu") -> dict:
    """{"tokens_per_s", "floor_tokens_per_s"} of one library on one workload, from its own process."""
    cmd = [py, HERE / "library_runner.py", "--library", library, "--workload", workload,
           "--rounds", str(rounds), "--threads", str(threads), "--device", device] + (["--bf16"] if bf16 else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        print(f"{library} {workload} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return {"tokens_per_s": float("nan"), "floor_tokens_per_s": float("nan")}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="timed turns of every row (fewer = faster, noisier)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--venv", type=Path, help="reuse (or create) this environment instead of a temporary one")
    ap.add_argument("--bf16", action="store_true", help="add W1 and W3 under bf16 autocast")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: every library runs there")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    use_device(args.device)
    tmp = None if args.venv else tempfile.TemporaryDirectory(prefix="interp-compare-")
    py = make_env(args.venv or Path(tmp.name) / "venv")

    calls = bench_train.calls_for({"W1", "W3"}, with_bf16=args.bf16)
    del calls["W1 dense"], calls["W3 dense"]  # bench_train.py reports those
    calls["W1 ours, unfused Adam"] = (bench_train.train_step(bench_train.topk_sparse, SHAPES.k, fused_adam=False), SHAPES.batch)
    ours = bench_train.tokens_per_s(calls, args.rounds)
    floor = ours["floor"]
    workloads = [(w, bf16) for bf16 in ([False, True] if args.bf16 else [False]) for w in ("W1", "W3")]
    theirs = {(lib, w, bf16): run_library(py, lib, w, args.rounds, args.threads, bf16, args.device) for lib in LIBRARIES
              for w, bf16 in workloads}

    print(f"\ntokens/s with {args.threads} threads; d_in {SHAPES.d_in}, d_dict {SHAPES.d_dict}, k {SHAPES.k}, "
          f"batch {SHAPES.batch}. Each process times the encoder GEMM (the floor) in turns with its rows;")
    print(f"'/ floor' divides by that process's floor, and 'ours / X' compares those floor-normalised numbers. "
          f"Our floor: {floor:.0f} tokens/s.")
    head = (f"{'workload':24s} {'ours':>8s} {'/ floor':>7s} {'sae-lens':>9s} {'/ floor':>7s} "
            f"{'sparsify':>9s} {'/ floor':>7s} {'ours/sae-lens':>14s} {'ours/sparsify':>14s}")
    print(head)
    print("-" * len(head))
    rows = [("W1 train", "W1 ours", "W1", False), ("W1 train, unfused Adam", "W1 ours, unfused Adam", "W1", False),
            ("W3 infer", "W3 ours", "W3", False)]
    if args.bf16:
        rows += [("W1 train, bf16 autocast", "W1 bf16", "W1", True), ("W3 infer, bf16 autocast", "W3 bf16", "W3", True)]
    for label, key, w, bf16 in rows:
        a = ours[key] / floor
        s, e = theirs[("sae-lens", w, bf16)], theirs[("sparsify", w, bf16)]
        sn, en = s["tokens_per_s"] / s["floor_tokens_per_s"], e["tokens_per_s"] / e["floor_tokens_per_s"]
        print(f"{label:24s} {ours[key]:8.0f} {a:7.2f} {s['tokens_per_s']:9.0f} {sn:7.2f} "
              f"{e['tokens_per_s']:9.0f} {en:7.2f} {a / sn:13.2f}x {a / en:13.2f}x")
    print(bench_train.blocks_line())
    print(machine_line())
    if tmp is not None:
        tmp.cleanup()

if __name__ == "__main__":
    main()
