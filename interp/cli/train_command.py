"""`interp train`: train one dictionary or a sweep from one activation stream."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from interp.cli import add_source_arguments, headline

HELP = "train SAEs on a model's activations (defaults: TopK on the embedded SmolLM2-135M)"
DESCRIPTION = ("Train one dictionary, or a sweep (comma-separated --k/--l1-coeff/--l0-coeff/--width) from a single "
               "activation stream. Writes cfg.json, sae.safetensors, metrics.json and density.html per run folder.")
DEFAULT_HOOK = "blocks.6.hook_resid_post"


def _list(kind):
    return lambda text: [kind(v) for v in text.split(",")]


def add_arguments(t) -> None:
    t.add_argument("--model", default="embedded", help="'embedded', a local HF folder, a .gguf file, 'tiny', or a TransformerLens name")
    t.add_argument("--hook", default=DEFAULT_HOOK, help="hook point to read (TransformerLens name)")
    t.add_argument("--arch", default="topk", choices=["relu", "topk", "batchtopk", "jumprelu", "gsae"],
                   help="gsae: TopK whose selection weighs each latent's effect on the loss (needs a backward pass per batch)")
    t.add_argument("--width", type=_list(int), default=None, help="latents (default 8 x d_in)")
    t.add_argument("--k", type=_list(int), default=[32], help="active latents per token (topk, batchtopk)")
    t.add_argument("--l1-coeff", type=_list(float), default=[5.0], help="L1 coefficient (relu)")
    t.add_argument("--l0-coeff", type=_list(float), default=[0.01], help="L0 coefficient (jumprelu)")
    t.add_argument("--beta", type=_list(float), default=[1.0], help="gradient weight in g-SAE selection (0 = TopK)")
    t.add_argument("--bandwidth", type=float, default=0.05, help="JumpReLU straight-through bandwidth")
    t.add_argument("--aux-k", type=int, default=None, help="AuxK latents for dead latents (default d_in/2 for topk/batchtopk, 0 otherwise)")
    t.add_argument("--tokens", type=int, default=400_000, help="training tokens")
    t.add_argument("--batch-size", type=int, default=4096, help="tokens per step")
    t.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3 suits the short CPU runs; large runs use less)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    t.add_argument("--cache-dir", default=None, help="cache harvested activations here (reused across runs)")
    t.add_argument("--autocast", action="store_true", help="bf16 autocast for the dictionary on CUDA")
    t.add_argument("--out", default=None, help="run folder (default runs/<arch>-<hook>)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    t.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")

    t.add_argument("--transcoder", action="store_true", help="train a transcoder: MLP input -> MLP output of --layer")
    t.add_argument("--layer", type=int, default=None, help="block of the transcoder's MLP")
    t.add_argument("--skip", action="store_true", help="skip transcoder: add a linear path beside the sparse one")
    t.add_argument("--wandb", default=None, metavar="PROJECT", help="log losses to this wandb project (needs wandb)")
    add_source_arguments(t)


def _sweep(args, d_in: int) -> list[tuple[str, dict]]:
    """(name, config fields) for every combination of the comma-separated flags."""
    widths = args.width or [8 * d_in]
    knobs = {"relu": {"l1_coeff": args.l1_coeff}, "jumprelu": {"l0_coeff": args.l0_coeff},
             "gsae": {"k": args.k, "beta": args.beta}}.get(args.arch, {"k": args.k})
    axes = {"d_dict": widths, **knobs}
    out = []
    for values in itertools.product(*axes.values()):
        fields = dict(zip(axes, values))
        name = "-".join(f"{'w' if k == 'd_dict' else k}{v:g}" for k, v in fields.items() if len(axes[k]) > 1)
        out.append((name, fields))
    return out


def _prepare_out(args) -> Path:
    default = f"runs/transcoder-{args.layer}-{args.arch}" if args.transcoder else f"runs/{args.arch}-{args.hook}"
    out = Path(args.out or default)
    if args.resume:
        return out
    if (out / "checkpoint.safetensors").exists() and not args.overwrite:
        raise FileExistsError(f"{out} already holds a run. Use --resume to continue it, --overwrite to replace it, or --out elsewhere.")
    return out


def run(args) -> int:
    import torch

    import saes  # noqa: F401 - registers the architectures
    from interp.activations import ActivationStore
    from interp.data import take_contexts
    from interp.dictionary import DictionaryConfig, architecture
    from interp.model import load_model
    from interp.runs import train_and_save
    from interp.train import TrainConfig

    from interp.distributed import init_from_env, world

    device = init_from_env(args.device)
    _, world_size = world()
    if args.batch_size % world_size:
        raise ValueError(f"--batch-size {args.batch_size} must divide among {world_size} ranks.")
    out = _prepare_out(args)
    model = load_model(args.model, device, getattr(torch, args.dtype))
    hooks = _hooks(args)
    gradients = {"grad": hooks["x"]} if "grad" in architecture(args.arch).needs else None
    store = ActivationStore(model, hooks, source=args.source, n_ctx=args.n_ctx, batch_size=args.batch_size // world_size,
                            seed=args.seed, device=device, cache_dir=args.cache_dir, text_column=args.text_column,
                            gradients=gradients)
    rows = store.block_rows(0)
    d_in, d_out = rows["x"].shape[1], rows.get("target", rows["x"]).shape[1]
    train_cfg = TrainConfig(tokens=args.tokens, lr=args.lr, seed=args.seed, checkpoint_every=args.checkpoint_every,
                            autocast=args.autocast)
    aux_k = args.aux_k if args.aux_k is not None else (d_in // 2 if args.arch in ("topk", "batchtopk", "gsae") else 0)
    training = {"source": args.source, "split": "train", "n_ctx": args.n_ctx, "tokens": train_cfg.steps(args.batch_size) * args.batch_size,
                "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
    base = DictionaryConfig(arch=args.arch, d_in=d_in, d_out=d_out, d_dict=8 * d_in, hook_in=hooks["x"],
                            hook_out=hooks.get("target", ""), subtract_b_dec=not args.transcoder, skip=args.skip,
                            model=args.model, aux_k=aux_k, dead_tokens=max(args.batch_size, args.tokens // 10),
                            bandwidth=args.bandwidth, training=training)
    sweep = _sweep(args, d_in)
    torch.manual_seed(args.seed)
    dictionaries = [architecture(args.arch)(base.replace(**fields)) for _, fields in sweep]
    eval_tokens = take_contexts(model, args.source, "validation", args.n_ctx, args.eval_contexts, text_column=args.text_column)
    log = _wandb_logger(args, [n or "run" for n, _ in sweep]) if args.wandb else None
    folders = train_and_save(model, store, dictionaries, train_cfg, out, eval_tokens, names=[n for n, _ in sweep],
                             resume=args.resume, log=log, target_key="target" if "target" in hooks else None)
    for folder in folders if world()[0] == 0 else []:
        print(f"{folder}: {json.dumps(headline(folder))}")
    return 0


def _hooks(args) -> dict[str, str]:
    """Store keys: "x" (and "target" for transcoders, which map the MLP's input to its output)."""
    if not args.transcoder:
        return {"x": args.hook}
    if args.layer is None:
        raise ValueError("--transcoder needs --layer L (the block whose MLP it replaces).")
    from transcoders import mlp_hooks

    return mlp_hooks(args.layer)


def _wandb_logger(args, names: list[str]):
    import wandb

    wandb.init(project=args.wandb, config=vars(args) | {"run": None}, resume="allow")
    return lambda step, logs: wandb.log({f"{n}/{k}": v for n, d in zip(names, logs) for k, v in d.items()}, step=step)
