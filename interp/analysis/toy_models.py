"""Small models with known structure for the interaction basis: a one-layer
transformer that groks modular addition (Nanda et al. 2023's setup) and an MLP
on a synthetic task. Both train on CPU in minutes and save as safetensors + JSON.

Run: python -m interp.analysis.toy_models modadd --p 113 --out runs/modadd [--steps 12000]
     python -m interp.analysis.toy_models mlp --out runs/mlp
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interp.config import from_dict, save_json


@dataclass(frozen=True)
class ModAddConfig:
    """Nanda et al.'s grokking setup: `a b =` -> (a + b) mod p, full-batch AdamW with strong weight decay."""

    p: int = 113
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    frac_train: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 1.0
    steps: int = 12000
    batch_size: int = 0  # 0: full batch; else a fresh random minibatch of the training pairs each step
    stop_at_test_acc: float = 1.0  # stop early once test accuracy reaches this (checked every log step)
    seed: int = 0


def modadd_model(cfg: ModAddConfig) -> HookedTransformer:
    """One attention layer and one ReLU MLP, no layer norm, over tokens 0..p-1 and '=' (id p)."""
    tl = HookedTransformerConfig(n_layers=1, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_model // cfg.n_heads,
                                 d_mlp=cfg.d_mlp, d_vocab=cfg.p + 1, d_vocab_out=cfg.p, n_ctx=3, act_fn="relu",
                                 normalization_type=None, seed=cfg.seed, device="cpu")
    return HookedTransformer(tl)


def modadd_data(cfg: ModAddConfig) -> dict[str, torch.Tensor]:
    """All p^2 pairs as tokens [p^2, 3] and labels [p^2], split by a seeded permutation."""
    a, b = torch.meshgrid(torch.arange(cfg.p), torch.arange(cfg.p), indexing="ij")
    tokens = torch.stack([a.flatten(), b.flatten(), torch.full_like(a.flatten(), cfg.p)], dim=1)
    labels = (tokens[:, 0] + tokens[:, 1]) % cfg.p
    perm = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(cfg.seed))
    n_train = int(cfg.frac_train * len(tokens))
    train, test = perm[:n_train], perm[n_train:]
    return {"train_tokens": tokens[train], "train_labels": labels[train], "test_tokens": tokens[test], "test_labels": labels[test]}


def last_logits_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """(cross-entropy, accuracy) of logits [n, n_ctx, d_vocab_out] at the last position."""
    last = logits[:, -1].double()
    return torch.nn.functional.cross_entropy(last, labels).item(), (last.argmax(-1) == labels).double().mean().item()


def train_modadd(cfg: ModAddConfig, out: str | Path | None = None, log_every: int = 500) -> tuple[HookedTransformer, dict]:
    """Train to grokking; returns the model and a log with wall time and final train/test loss and accuracy."""
    torch.manual_seed(cfg.seed)
    model, data = modadd_model(cfg), modadd_data(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    history, start = [], time.perf_counter()
    g = torch.Generator().manual_seed(cfg.seed + 1)
    n_train = len(data["train_tokens"])
    for step in (bar := tqdm(range(cfg.steps), desc="modadd")):
        rows = torch.randint(n_train, (cfg.batch_size,), generator=g) if cfg.batch_size else slice(None)
        logits = last_position_logits(model, data["train_tokens"][rows])
        loss = torch.nn.functional.cross_entropy(logits, data["train_labels"][rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == cfg.steps - 1:
            row = {"step": step, "seconds": time.perf_counter() - start, **evaluate_modadd(model, data)}
            history.append(row)
            bar.set_postfix(train=f"{row['train_loss']:.3g}", test_acc=f"{row['test_acc']:.3f}")
            if row["test_acc"] >= cfg.stop_at_test_acc:
                break
    log = {"seconds": time.perf_counter() - start, **history[-1], "history": history}
    if out is not None:
        save_toy(model, cfg, out, log)
    return model, log


def last_position_logits(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """The modular-addition model's logits [n, p] at the last position only (3x cheaper than model(tokens)[:, -1])."""
    x = model.W_E[tokens] + model.W_pos[: tokens.shape[1]]
    attn, mlp = model.blocks[0].attn, model.blocks[0].mlp
    q = torch.einsum("nd,hde->nhe", x[:, -1], attn.W_Q) + attn.b_Q
    k = torch.einsum("npd,hde->nhpe", x, attn.W_K) + attn.b_K[:, None]
    v = torch.einsum("npd,hde->nhpe", x, attn.W_V) + attn.b_V[:, None]
    pattern = (torch.einsum("nhe,nhpe->nhp", q, k) / attn.cfg.d_head**0.5).softmax(-1)
    mid = x[:, -1] + torch.einsum("nhp,nhpe,hed->nd", pattern, v, attn.W_O) + attn.b_O
    resid = mid + torch.relu(mid @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out
    return resid @ model.W_U + model.b_U


@torch.no_grad()
def evaluate_modadd(model: HookedTransformer, data: dict) -> dict[str, float]:
    out = {}
    for split in ("train", "test"):
        out[f"{split}_loss"], out[f"{split}_acc"] = last_logits_loss(model(data[f"{split}_tokens"]), data[f"{split}_labels"])
    return out


def save_toy(model: torch.nn.Module, cfg, out: str | Path, log: dict | None = None) -> Path:
    """weights.safetensors + cfg.json (+ log.json)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "weights.safetensors"))
    save_json({"kind": type(cfg).__name__, **dataclasses.asdict(cfg)}, out / "cfg.json")
    if log is not None:
        (out / "log.json").write_text(json.dumps(log, indent=2))
    return out


def load_modadd(folder: str | Path) -> tuple[HookedTransformer, ModAddConfig]:
    data = json.loads((Path(folder) / "cfg.json").read_text())
    if data.pop("kind", None) != "ModAddConfig":
        raise ValueError(f"{folder}/cfg.json is not a modular-addition model (expected kind 'ModAddConfig').")
    cfg = from_dict(ModAddConfig, data, source=str(folder))
    model = modadd_model(cfg)
    model.load_state_dict(load_file(str(Path(folder) / "weights.safetensors")))
    model.eval()
    model.requires_grad_(False)
    return model, cfg


# ---- an MLP on a synthetic task -------------------------------------------------------------------------

@dataclass(frozen=True)
class MLPConfig:
    """Classify which of `n_classes` random prototypes a noisy, nonlinearly warped input is closest to."""

    d_in: int = 16
    d_hidden: int = 32
    n_layers: int = 2
    n_classes: int = 8
    n_train: int = 4096
    n_test: int = 2048
    noise: float = 0.6
    steps: int = 1500
    lr: float = 3e-3
    seed: int = 0


class MLP(torch.nn.Module):
    """Linear -> ReLU repeated, then a linear readout; `layers` are the nn.Linear modules in order."""

    def __init__(self, cfg: MLPConfig):
        super().__init__()
        dims = [cfg.d_in] + [cfg.d_hidden] * cfg.n_layers + [cfg.n_classes]
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def mlp_data(cfg: MLPConfig) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(cfg.seed)
    protos = torch.randn(cfg.n_classes, cfg.d_in, generator=g)
    n = cfg.n_train + cfg.n_test
    labels = torch.randint(cfg.n_classes, (n,), generator=g)
    x = protos[labels] + cfg.noise * torch.randn(n, cfg.d_in, generator=g)
    x = torch.tanh(x) + 0.1 * x**2  # a fixed nonlinear warp, so the task is not linearly separable as given
    return {"train_x": x[: cfg.n_train], "train_labels": labels[: cfg.n_train],
            "test_x": x[cfg.n_train:], "test_labels": labels[cfg.n_train:]}


def train_mlp(cfg: MLPConfig, out: str | Path | None = None) -> tuple[MLP, dict]:
    torch.manual_seed(cfg.seed)
    model, data = MLP(cfg), mlp_data(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start = time.perf_counter()
    for _ in tqdm(range(cfg.steps), desc="mlp"):
        loss = torch.nn.functional.cross_entropy(model(data["train_x"]), data["train_labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval().requires_grad_(False)
    with torch.no_grad():
        log = {"seconds": time.perf_counter() - start}
        for split in ("train", "test"):
            logits = model(data[f"{split}_x"])
            log[f"{split}_loss"] = torch.nn.functional.cross_entropy(logits, data[f"{split}_labels"]).item()
            log[f"{split}_acc"] = (logits.argmax(-1) == data[f"{split}_labels"]).float().mean().item()
    if out is not None:
        save_toy(model, cfg, out, log)
    return model, log


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m interp.analysis.toy_models", description="Train a toy model for the interaction basis.")
    parser.add_argument("task", choices=["modadd", "mlp"])
    parser.add_argument("--p", type=int, default=113)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--frac-train", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=0, help="0: full batch")
    parser.add_argument("--weight-decay", type=float, default=1.0)
    parser.add_argument("--stop-at-test-acc", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.task == "modadd":
        cfg = ModAddConfig(p=args.p, frac_train=args.frac_train, lr=args.lr, seed=args.seed, batch_size=args.batch_size,
                           weight_decay=args.weight_decay, stop_at_test_acc=args.stop_at_test_acc,
                           **({"steps": args.steps} if args.steps else {}))
        _, log = train_modadd(cfg, args.out)
    else:
        _, log = train_mlp(MLPConfig(seed=args.seed, **({"steps": args.steps} if args.steps else {})), args.out)
    print(json.dumps({k: v for k, v in log.items() if k != "history"}, indent=2))


if __name__ == "__main__":
    main()
