"""`interp train`: train one dictionary or a sweep from one activation stream."""

from __future__ import annotations

import importlib.metadata
import itertools
import json
from pathlib import Path

from interp.cli import add_source_arguments, headline
from interp.cli.flags import add_flags, config_fields

HELP = "train SAEs on a model's activations (defaults: TopK on the embedded SmolLM2-135M)"
DESCRIPTION = ("Train one dictionary, or a sweep (comma-separated --hook/--k/--l1-coeff/--l0-coeff/--width) from a single "
               "activation stream. Writes cfg.json, sae.safetensors, metrics.json and density.html per run folder. "
               "Under torchrun it trains data-parallel, or module-parallel (--parallel module: one model pass, "
               "each rank trains its own sweep members).")
DEFAULT_HOOK = "blocks.6.hook_resid_post"
# The flags below are derived from these dataclass fields (defaults and help included): see interp.cli.flags.
DICTIONARY_FIELDS = ["d_dict", "k", "l1_coeff", "l0_coeff", "beta", "bandwidth", "threshold_init", "aux_k", "aux_coeff",
                     "dead_tokens"]
TRAIN_FIELDS = ["tokens", "lr", "warmup_steps", "decay_fraction", "grad_clip", "checkpoint_every", "seed", "autocast",
                "tf32", "stack", "parallel", "keep_checkpoint"]


def add_arguments(t) -> None:
    dictionary = config_fields("interp.dictionary", "DictionaryConfig")
    t.add_argument("--model", default="embedded", help="'embedded', a local HF folder, a .gguf file, 'tiny', or a TransformerLens name")
    t.add_argument("--hook", default=DEFAULT_HOOK, help="hook point to read (TransformerLens name); comma-separated names "
                   "train one dictionary per hook from one model pass")
    t.add_argument("--arch", default="topk", help=f"architecture: {', '.join(_installed_architectures())} [default: topk]. "
                   "Comma-separated values are allowed for the fields the architecture sweeps.")
    add_flags(t, dictionary, DICTIONARY_FIELDS, rename={"d_dict": "width"}, lists=True)
    add_flags(t, config_fields("interp.training.loop", "TrainConfig"), TRAIN_FIELDS)
    t.add_argument("--batch-size", type=int, default=4096, help="tokens per step [default: 4096]")
    t.add_argument("--cache-dir", default=None, help="cache harvested activations here (reused across runs)")
    t.add_argument("--shuffle-shards", type=int, default=None, metavar="N",
                   help="train from the finished cache in --cache-dir without running the model, shuffling rows across "
                   "N shards at a time (the shard order is re-drawn every pass)")
    t.add_argument("--out", default=None, help="run folder (default runs/<arch>-<hook>)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    t.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")

    t.add_argument("--transcoder", action="store_true", help="train a transcoder: MLP input -> MLP output of --layer")
    t.add_argument("--layer", type=int, default=None, help="block of the transcoder's MLP")
    add_flags(t, dictionary, ["skip"])
    t.add_argument("--wandb", default=None, metavar="PROJECT", help="log losses to this wandb project (needs wandb)")
    add_source_arguments(t)


def _sweep(args, sweep_fields: tuple[str, ...]) -> list[tuple[str, str, dict]]:
    """(name, store key, config fields) for every hook and every combination of the comma-separated values of
    the fields the architecture sweeps (`sweep_fields`); any other field takes one value."""
    hooks = _hooks(args)
    keys = [k for k in hooks if k != "target"]
    given = {name: v if isinstance(v, list) else [v] for name in DICTIONARY_FIELDS for v in [getattr(args, name)]}
    for name, vals in given.items():
        if len(vals) > 1 and name not in sweep_fields:
            flag = "--width" if name == "d_dict" else "--" + name.replace("_", "-")
            raise ValueError(f"{flag} has {len(vals)} values, but --arch {args.arch} sweeps only "
                             f"{', '.join(sweep_fields)}; give {flag} one value.")
    axes = {name: vals for name, vals in given.items() if name in sweep_fields}
    fixed = {name: vals[0] for name, vals in given.items() if name not in sweep_fields}
    out = []
    for key in keys:
        for values in itertools.product(*axes.values()):
            fields = dict(zip(axes, values))
            parts = [hooks[key]] if len(keys) > 1 else []
            parts += [f"{'w' if k == 'd_dict' else k}{v:g}" for k, v in fields.items() if len(axes[k]) > 1]
            out.append(("-".join(parts), key, {**fixed, **fields}))
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
    train_cfg = TrainConfig(**{name: getattr(args, name) for name in TRAIN_FIELDS})  # flags checked before any work
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
    cls = architecture(args.arch)
    sweep = _sweep(args, cls.sweep_fields)
    torch.manual_seed(args.seed)
    dictionaries = [cls(DictionaryConfig(arch=args.arch, d_in=rows[key].shape[1], d_out=rows.get("target", rows[key]).shape[1],
                                         hook_in=hooks[key], hook_out=hooks.get("target", ""), model=args.model,
                                         subtract_b_dec=not args.transcoder, skip=args.skip, **fields))
                    for _, key, fields in sweep]
    log = _wandb_logger(args, [n or "run" for n, _, _ in sweep]) if args.wandb else None
    folders = train_and_save(model, store, dictionaries, train_cfg, out, eval_tokens, names=[n for n, _, _ in sweep],
                             resume=args.resume, overwrite=args.overwrite, log=log, input_key=[key for _, key, _ in sweep],
                             target_key="target" if "target" in hooks else None)
    for folder in folders if world()[0] == 0 else []:
        print(f"{folder}: {json.dumps(headline(folder))}")
    return 0


def _installed_architectures() -> list[str]:
    """Architecture names the installed packages declare (read without importing them, for --help)."""
    return sorted(ep.name for ep in importlib.metadata.entry_points(group="interp.dictionaries"))


def _hooks(args) -> dict[str, str]:
    """Store keys: "x" (then "x1", "x2", ... for further hooks; "target" for transcoders, which map the MLP's input to its output)."""
    from interp.dictionary import architecture

    if not args.transcoder:
        names = args.hook.split(",")
        if len(names) > 1 and "grad" in architecture(args.arch).needs:
            raise ValueError(f"--arch {args.arch} trains on one --hook at a time (it uses that hook's gradient).")
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
