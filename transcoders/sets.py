"""A transcoder set: one transcoder per layer, saved as one run folder per layer
(`<folder>/layer_<L>/`, the layout `train_transcoder_set` writes), the input
of attribution graphs."""

from __future__ import annotations

from pathlib import Path

from interp.dictionary import CFG_FILE, Dictionary
from interp.model import hook_layer


def load_transcoder_set(folder: str | Path, n_layers: int | None = None, device: str = "cpu") -> dict[int, Dictionary]:
    """{layer: transcoder} from every run folder under `folder` that maps an MLP's input to its output."""
    folder = Path(folder)
    runs = sorted(p.parent for p in folder.glob(f"*/{CFG_FILE}"))
    if not runs:
        raise FileNotFoundError(f"{folder} holds no run folders (*/{CFG_FILE}); expected layer_0/, layer_1/, ...")
    out: dict[int, Dictionary] = {}
    for run in runs:
        tc = Dictionary.load(run, device)
        if not (tc.cfg.hook_in.endswith("ln2.hook_normalized") and tc.cfg.hook_out.endswith("hook_mlp_out")):
            continue
        layer = hook_layer(tc.cfg.hook_out)
        if layer in out:
            raise ValueError(f"{folder}: two transcoders for layer {layer} ({run.name} and another).")
        out[layer] = tc
    missing = sorted(set(range(n_layers)) - set(out)) if n_layers is not None else []
    if missing or not out:
        raise ValueError(f"{folder}: no transcoder for layers {missing or 'any'}; a circuit needs one per layer.")
    return out


def train_transcoder_set(model, out_dir: str | Path, train_cfg, eval_tokens, layers: list[int] | None = None,
                         arch: str = "topk", source: str = "shakespeare", batch_size: int = 4096,
                         block_contexts: int = 64, resume: bool = False, **fields) -> dict[int, Path]:
    """Train one transcoder per layer from a single model pass (one activation stream holding every
    layer's MLP input and output) and write `out_dir/layer_<L>/` run folders with metrics.

    `fields` go to every layer's DictionaryConfig (k, d_dict, skip, ...); what they leave out takes the
    architecture's defaults (AuxK, the dead-latent window) and train()'s record of the run."""
    from interp.data.activations import ActivationStore
    from interp.dictionary import architecture
    from interp.training.runs import train_and_save
    from transcoders.config import INPUT_KEY, TARGET_KEY, mlp_hooks, transcoder_config

    layers = list(range(model.cfg.n_layers)) if layers is None else layers
    hooks = {f"{key}{layer}": name for layer in layers for key, name in mlp_hooks(layer).items()}
    store = ActivationStore(model, hooks, source=source, batch_size=batch_size, block_contexts=block_contexts,
                            seed=train_cfg.seed)
    spec = getattr(model, "spec", "")
    dictionaries = [architecture(arch)(transcoder_config(model.cfg.d_model, layer, arch, model=spec, **fields))
                    for layer in layers]
    folders = train_and_save(model, store, dictionaries, train_cfg, Path(out_dir), eval_tokens,
                             names=[f"layer_{layer}" for layer in layers], resume=resume,
                             input_key=[f"{INPUT_KEY}{layer}" for layer in layers],
                             target_key=[f"{TARGET_KEY}{layer}" for layer in layers])
    return dict(zip(layers, folders))
