"""A transcoder set: one transcoder per layer, saved as one run folder per layer
(`<folder>/layer_<L>/`, the layout `train_transcoder_set` writes), the input
of attribution graphs. Loading is `interp.io.load_transcoder_set` (every set format)."""

from __future__ import annotations

from pathlib import Path

from interp.dictionary import Dictionary


def load_transcoder_set(folder: str | Path, n_layers: int | None = None, device: str = "cpu",
                        **options) -> dict[int, Dictionary]:
    """{layer: transcoder} from the `layer_<L>/` run folders `train_transcoder_set` writes, or from any set
    `interp.io.load_transcoder_set` reads (a circuit-tracer YAML, a sparsify or Llama Scope release, a hub
    repo id), which this delegates to; kept for its positional (folder, n_layers, device) signature. A
    cross-layer transcoder's folder (ours, or circuit-tracer's) gives its per-layer views (`layer_transcoders`).
    `options`: the rest of interp.io.load_transcoder_set's keywords (format, dtype, model, revision)."""
    from interp.io import load_transcoder_set as load
    from interp.io.circuit_tracer import is_clt

    if is_clt(Path(folder)):  # a cross-layer transcoder (ours or circuit-tracer's): its per-layer views
        from transcoders.clt import load_clt

        views = load_clt(folder, device).layer_transcoders()
        if n_layers is not None and len(views) != n_layers:
            raise ValueError(f"{folder}: a cross-layer transcoder over {len(views)} layers; a circuit needs {n_layers}.")
        return views
    return load(folder, n_layers=n_layers, device=device, **options)


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
