"""How an intervention moves the next-token distribution after a prompt."""

from __future__ import annotations

import torch

from interp.interventions.spec import Intervention
from interp.interventions.splice import as_tokens, run_with_interventions
from interp.model import decode_tokens


@torch.no_grad()
def next_token_changes(model, prompt: str | torch.Tensor, interventions: list[Intervention] | Intervention,
                       k: int = 5, keep_error: bool = True) -> dict[str, list[dict]]:
    """The k next tokens whose log-probability rises most ("up") and falls most ("down") under the
    interventions, each {"token_id", "token", "before", "after" (probabilities), "change" (log-probability)}."""
    tokens = as_tokens(model, prompt)
    before = model(tokens)[0, -1].float().log_softmax(-1)
    after = run_with_interventions(model, tokens, interventions, keep_error)[0][0, -1].float().log_softmax(-1)
    change = (after - before).cpu()
    rows = lambda ids: [{"token_id": i, "token": t, "before": before[i].exp().item(), "after": after[i].exp().item(),
                         "change": change[i].item()} for i, t in zip(ids, decode_tokens(model, ids))]
    return {"up": rows(change.topk(k).indices.tolist()), "down": rows((-change).topk(k).indices.tolist())}
