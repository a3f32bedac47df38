"""Transcoders (Dunefsky et al., "Transcoders Find Interpretable LLM Feature
Circuits", 2024) and skip transcoders (Paulo et al., 2025).

A transcoder is a sparse dictionary from an MLP's input
(`blocks.L.ln2.hook_normalized`) to its output (`blocks.L.hook_mlp_out`),
trained with MSE to the MLP's output, so its latents describe what the MLP
computes rather than what the residual stream holds. A skip transcoder adds a
linear path W_skip [d_in, d_out] beside the sparse one. Any registered
architecture (ReLU+L1, TopK, ...) can be a transcoder: this module only builds
the configuration and the activation-store keys; training, evals and splicing
are the shared ones. A transcoder set (one per layer, `sets.py`) is what
attribution graphs (`interp.circuits`) run on; it trains from one model pass.
A cross-layer transcoder (`clt.py`, trained by `clt_train.py`) gives each layer's
features decoders into every later MLP output too; `clt.layer_transcoders()` is
the set the circuits and `interp.analysis.replacement_evals` read.
"""

from transcoders.clt import CLTConfig, CrossLayerTranscoder, load_clt
from transcoders.clt_train import train_clt, train_clt_folder
from transcoders.config import mlp_hooks, transcoder_config
from transcoders.sets import load_transcoder_set, train_transcoder_set

__all__ = ["CLTConfig", "CrossLayerTranscoder", "load_clt", "load_transcoder_set", "mlp_hooks", "train_clt", "train_clt_folder",
           "train_transcoder_set", "transcoder_config"]
