"""Interventions on dictionary latents: clamp, add (steer), scale or ablate (zero or held-out mean)
latents of SAEs, transcoders and attention-output SAEs, several at once, with the error term kept;
read the logits and codes after the change, generate text under them, and intervene in a circuit's
local replacement model (`replacement_logits`).

    from interp.interventions import Intervention, intervene, generate
    with intervene(model, [Intervention.add(sae, 123, 8.0)]):
        logits = model(tokens)
"""

from interp.interventions.generate import continuation, generate
from interp.interventions.replacement import replacement_logits
from interp.interventions.spec import AFTER_BOS, Intervention, mean_codes
from interp.interventions.splice import dictionary_hooks, intervene, intervention_hooks, run_with_interventions

__all__ = ["AFTER_BOS", "Intervention", "continuation", "dictionary_hooks", "generate", "intervene",
           "intervention_hooks", "mean_codes", "replacement_logits", "run_with_interventions"]
