"""interp: sparse dictionaries, evals and circuits on TransformerLens models.

The public surface, loaded lazily (importing `interp` imports nothing else, so `interp --help` is instant):

    from interp import load_model, ActivationStore, DictionaryConfig, TrainConfig, train_and_save, Dictionary

Models: load_model. Data: ActivationStore, CacheStore, take_contexts. Dictionaries: Dictionary,
DictionaryConfig, architecture, register, load_dictionary, load_transcoder_set, check_compatible. Training: TrainConfig,
train, train_and_save. Analysis: evaluate, splice_hooks. Circuits: attribute, write_report.
Interventions: Intervention, intervene, generate. Each name's home module is in `_EXPORTS`.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "interp.model",
    "ActivationStore": "interp.data.activations",
    "CacheStore": "interp.data.activations",
    "take_contexts": "interp.data.tokens",
    "Dictionary": "interp.dictionary",
    "DictionaryConfig": "interp.dictionary",
    "architecture": "interp.dictionary",
    "register": "interp.dictionary",
    "load_dictionary": "interp.io",
    "load_transcoder_set": "interp.io",
    "check_compatible": "interp.io",
    "TrainConfig": "interp.training.loop",
    "train": "interp.training.loop",
    "train_and_save": "interp.training.runs",
    "evaluate": "interp.analysis.evals",
    "splice_hooks": "interp.hooks",
    "attribute": "interp.circuits",
    "write_report": "interp.circuits",
    "Intervention": "interp.interventions",
    "intervene": "interp.interventions",
    "generate": "interp.interventions",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'interp' has no attribute {name!r}; its public names are {__all__}.")
    module = importlib.import_module(_EXPORTS[name])
    if not hasattr(module, name):
        raise AttributeError(f"interp.{name} should come from {_EXPORTS[name]}, which does not define it in this "
                             f"version of interp; update interp or import it from where your version defines it.")
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
