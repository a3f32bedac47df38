"""Dictionaries in other libraries' formats: `load_dictionary` / `load_transcoder_set` read our format,
SAELens, Gemma Scope, Llama Scope, sparsify, dictionary_learning and circuit-tracer sets (local or from the hub);
`save_saelens` and `save_circuit_tracer_set` write; `check_compatible` pairs a dictionary with a model."""

from interp.io.compat import check_compatible
from interp.io.load import FORMATS, load_dictionary, load_transcoder_set

__all__ = ["FORMATS", "check_compatible", "load_dictionary", "load_transcoder_set"]
