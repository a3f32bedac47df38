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
