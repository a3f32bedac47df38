"""Text generation with interventions applied to the prompt and to every generated token.

Each step runs the whole sequence again (no key/value cache), so an intervention at "all" positions,
a slice, or "new" (generated tokens only) covers each new token exactly as it covers the prompt.
Temperature 0 is greedy decoding; otherwise tokens are sampled from softmax(logits / temperature)
with a generator seeded by `seed`, so a run is reproducible.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from interp.interventions.spec import Intervention
from interp.interventions.splice import _as_list, as_tokens, intervention_hooks
from interp.model import decode_tokens


@torch.no_grad()
def generate(model, prompt: str | torch.Tensor, interventions: list[Intervention] | Intervention = (),
             max_new_tokens: int = 40, temperature: float = 0.0, seed: int = 0, keep_error: bool = True,
             progress: bool = False) -> torch.Tensor:
    """Token ids [prompt_len + max_new_tokens] of the prompt (a string gets BOS first, or ids [pos]) and its
    continuation under `interventions`. `continuation(model, ids, prompt_len)` turns the new ids into text."""
    tokens = as_tokens(model, prompt)
    if tokens.shape[0] != 1:
        raise ValueError(f"generate takes one prompt; got a batch of {tokens.shape[0]}.")
    if not temperature >= 0 or max_new_tokens < 0:
        raise ValueError(f"temperature must be >= 0 and max_new_tokens >= 0; got {temperature} and {max_new_tokens}.")
    prompt_len = tokens.shape[1]
    if prompt_len + max_new_tokens > model.cfg.n_ctx:
        raise ValueError(f"{prompt_len} prompt tokens + {max_new_tokens} new ones exceed the model's context of "
                         f"{model.cfg.n_ctx}; ask for fewer new tokens.")
    generator = torch.Generator().manual_seed(seed)
    hooks = intervention_hooks(model, _as_list(interventions), keep_error, prompt_len=prompt_len)
    with model.hooks(fwd_hooks=hooks):
        for _ in tqdm(range(max_new_tokens), desc="generate", disable=not progress, leave=False):
            logits = model(tokens)[0, -1].float().cpu()
            tokens = torch.cat([tokens, next_token(logits, temperature, generator).to(tokens)[None, None]], 1)
    return tokens[0]


def next_token(logits: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """The argmax of logits [d_vocab] at temperature 0, else a sample from softmax(logits / temperature)."""
    if temperature == 0:
        return logits.argmax()
    return torch.multinomial((logits / temperature).softmax(-1), 1, generator=generator)[0]


def continuation(model, ids: torch.Tensor, prompt_len: int) -> str:
    """The text of the generated tokens ids[prompt_len:]."""
    new = ids[prompt_len:].tolist()
    if model.tokenizer is not None:
        return model.tokenizer.decode(new)
    return "".join(decode_tokens(model, new))
