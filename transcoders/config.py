"""Configuration of transcoders: which hooks they read and write, and how."""

from __future__ import annotations

from interp.dictionary import DictionaryConfig

INPUT_KEY, TARGET_KEY = "x", "target"


def mlp_hooks(layer: int) -> dict[str, str]:
    """Activation-store keys for a transcoder of block `layer`: the MLP's input and its output."""
    return {INPUT_KEY: f"blocks.{layer}.ln2.hook_normalized", TARGET_KEY: f"blocks.{layer}.hook_mlp_out"}


def transcoder_config(d_model: int, layer: int, arch: str = "topk", skip: bool = False, **fields) -> DictionaryConfig:
    """A DictionaryConfig mapping MLP input to MLP output at `layer` (inputs are not centred by b_dec)."""
    hooks = mlp_hooks(layer)
    fields.setdefault("d_dict", 8 * d_model)
    return DictionaryConfig(arch=arch, d_in=d_model, d_out=d_model, hook_in=hooks[INPUT_KEY], hook_out=hooks[TARGET_KEY],
                            subtract_b_dec=False, skip=skip, **fields)
