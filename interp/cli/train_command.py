"""`interp train`: train one dictionary or a sweep from one activation stream."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from interp.cli import add_source_arguments, headline

HELP = "train SAEs on a model's activations (defaults: TopK on the embedded SmolLM2-135M)"
DESCRIPTION = ("Train one dictionary, or a sweep (comma-separated --hook/--k/--l1-coeff/--l0-coeff/--width) from a single "
               "activation stream. Writes cfg.json, sae.safetensors, metrics.json and density.html per run folder. "
               "Under torchrun it trains data-parallel, or module-parallel (--parallel module: one model pass, "
               "each rank trains its own sweep members).")
DEFAULT_HOOK = "blocks.6.hook_resid_post"


def _list(kind):
    return lambda text: [kind(v) for v in text.split(",")]


def add_arguments(t) -> None:
    t.add_argument("--model", default="embedded", help="'embedded', a local HF folder, a .gguf file, 'tiny', or a TransformerLens name")
    t.add_argument("--hook", default=DEFAULT_HOOK, help="hook point to read (TransformerLens name); comma-separated names "
                   "train one dictionary per hook from one model pass")
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
    t.add_argument("--shuffle-shards", type=int, default=None, metavar="N",
                   help="train from the finished cache in --cache-dir without running the model, shuffling rows across "
                   "N shards at a time (the shard order is re-drawn every pass)")
    t.add_argument("--parallel", choices=["data", "module"], default="data",
                   help="under torchrun: 'data' splits each batch among the ranks; 'module' shares each batch and gives "
                   "every rank its own sweep members (at least one per rank)")
    t.add_argument("--autocast", action="store_true", help="bf16 autocast for the dictionary on CUDA")
    t.add_argument("--out", default=None, help="run folder (default runs/<arch>-<hook>)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    t.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")

    t.add_argument("--transcoder", action="store_true", help="train a transcoder: MLP input -> MLP output of --layer")
    t.add_argument("--layer", type=int, default=None, help="block of the transcoder's MLP")
    t.add_argument("--skip", action="store_true", help="skip transcoder: add a linear path beside the sparse one")
    t.add_argument("--wandb", default=None, metavar="PROJECT", help="log losses to this wandb project (needs wandb)")
    add_source_arguments(t)


def _sweep(args, hooks: dict[str, str], widths: dict[str, int]) -> list[tuple[str, str, dict]]:
    """(name, store key, config fields) for every hook and every combination of the comma-separated flags."""
    keys = [k for k in hooks if k != "target"]
    knobs = {"relu": {"l1_coeff": args.l1_coeff}, "jumprelu": {"l0_coeff": args.l0_coeff},
             "gsae": {"k": args.k, "beta": args.beta}}.get(args.arch, {"k": args.k})
    out = []
    for key in keys:
        axes = {"d_dict": args.width or [8 * widths[key]], **knobs}
        for values in itertools.product(*axes.values()):
            fields = dict(zip(axes, values))
            parts = [hooks[key]] if len(keys) > 1 else []
            parts += [f"{'w' if k == 'd_dict' else k}{v:g}" for k, v in fields.items() if len(axes[k]) > 1]
            out.append(("-".join(parts), key, fields))
    return out


def _prepare_out(args) -> Path:
    default = f"runs/transcoder-{args.layer}-{args.arch}" if args.transcoder else f"runs/{args.arch}-{args.hook}"
    return Path(args.out or default)


def run(args) -> int:
    """Claim the run folder (checked, writable, locked: interp.training.run_folder) before the model loads."""
    from interp.distributed import init_from_env
    from interp.training import run_folder

    init_from_env(args.device)  # join torchrun's process group first: rank 0 claims the folder for all ranks
    with run_folder.claim(_prepare_out(args), resume=args.resume, overwrite=args.overwrite):
        return _run(args)


def _run(args) -> int:
    import torch

    import saes  # noqa: F401 - registers the architectures
    from interp.data.activations import ActivationStore, CacheStore
    from interp.data.tokens import take_contexts
    from interp.dictionary import DictionaryConfig, architecture
    from interp.model import load_model
    from interp.training.runs import train_and_save
    from interp.training.loop import TrainConfig

    from interp.distributed import init_from_env, world

    device = init_from_env(args.device)
    _, world_size = world()
    if args.batch_size % world_size:
        raise ValueError(f"--batch-size {args.batch_size} must divide among {world_size} ranks.")
    out = _prepare_out(args)
    train_cfg = TrainConfig(tokens=args.tokens, lr=args.lr, seed=args.seed, checkpoint_every=args.checkpoint_every,
                            autocast=args.autocast, parallel=args.parallel)  # flags checked before any work
    model = load_model(args.model, device, getattr(torch, args.dtype))
    eval_tokens = take_contexts(model, args.source, "validation", args.n_ctx, args.eval_contexts, text_column=args.text_column)
    hooks = _hooks(args)
    gradients = {"grad": hooks["x"]} if "grad" in architecture(args.arch).needs else None
    if args.shuffle_shards is not None:
        store = CacheStore(_cache_dir(args), batch_size=args.batch_size // world_size, mix=args.shuffle_shards,
                           seed=args.seed, device=device)
        _check_cache(args, store.cache.description, {"model": getattr(model, "spec", type(model).__name__),
                                                     "hooks": hooks, "gradients": gradients or {}})
    else:
        store = ActivationStore(model, hooks, source=args.source, n_ctx=args.n_ctx, batch_size=args.batch_size // world_size,
                                seed=args.seed, device=device, cache_dir=args.cache_dir, text_column=args.text_column,
                                gradients=gradients)
    rows = store.block_rows(0)
    source = store.cache.description if args.shuffle_shards else {"source": args.source, "n_ctx": args.n_ctx}
    training = {"source": source["source"], "split": "train", "n_ctx": source["n_ctx"],
                "tokens": train_cfg.steps(args.batch_size) * args.batch_size, "batch_size": args.batch_size, "lr": args.lr,
                "seed": args.seed}

    def base(key: str) -> DictionaryConfig:
        d_in, d_out = rows[key].shape[1], rows.get("target", rows[key]).shape[1]
        aux_k = args.aux_k if args.aux_k is not None else (d_in // 2 if args.arch in ("topk", "batchtopk", "gsae") else 0)
        return DictionaryConfig(arch=args.arch, d_in=d_in, d_out=d_out, d_dict=8 * d_in, hook_in=hooks[key],
                                hook_out=hooks.get("target", ""), subtract_b_dec=not args.transcoder, skip=args.skip,
                                model=args.model, aux_k=aux_k, dead_tokens=max(args.batch_size, args.tokens // 10),
                                bandwidth=args.bandwidth, training=training)

    sweep = _sweep(args, hooks, {k: v.shape[1] for k, v in rows.items()})
    torch.manual_seed(args.seed)
    dictionaries = [architecture(args.arch)(base(key).replace(**fields)) for _, key, fields in sweep]
    log = _wandb_logger(args, [n or "run" for n, _, _ in sweep]) if args.wandb else None
    folders = train_and_save(model, store, dictionaries, train_cfg, out, eval_tokens, names=[n for n, _, _ in sweep],
                             resume=args.resume, overwrite=args.overwrite, log=log, input_key=[key for _, key, _ in sweep],
                             target_key="target" if "target" in hooks else None)
    for folder in folders if world()[0] == 0 else []:
        print(f"{folder}: {json.dumps(headline(folder))}")
    return 0


def _hooks(args) -> dict[str, str]:
    """Store keys: "x" (then "x1", "x2", ... for further hooks; "target" for transcoders, which map the MLP's input to its output)."""
    if not args.transcoder:
        names = args.hook.split(",")
        if len(names) > 1 and args.arch == "gsae":
            raise ValueError("--arch gsae trains on one --hook at a time (its selection uses that hook's gradient).")
        return {("x" if i == 0 else f"x{i}"): name for i, name in enumerate(names)}
    if args.layer is None:
        raise ValueError("--transcoder needs --layer L (the block whose MLP it replaces).")
    from transcoders import mlp_hooks

    return mlp_hooks(args.layer)


def _cache_dir(args) -> str:
    if args.cache_dir is None:
        raise ValueError("--shuffle-shards reads a finished activation cache; give its folder with --cache-dir.")
    return args.cache_dir


def _check_cache(args, cached: dict, wanted: dict) -> None:
    for key, value in wanted.items():
        if cached.get(key) != value:
            raise ValueError(f"The activation cache {args.cache_dir} was harvested with {key} {cached.get(key)}, not {value}; "
                             "pass the --model/--hook/--arch it was written for, or another --cache-dir.")


def _wandb_logger(args, names: list[str]):
    import wandb

    wandb.init(project=args.wandb, config=vars(args) | {"run": None}, resume="allow")
    return lambda step, logs: wandb.log({f"{n}/{k}": v for n, d in zip(names, logs) for k, v in d.items()}, step=step)
