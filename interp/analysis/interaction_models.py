"""Models as chains of node layers for the interaction basis (`interp.analysis.interaction.Chain`).

Transformer nodes (TransformerLens names, in forward order):
  blocks.L.hook_resid_pre / hook_resid_mid / hook_resid_post   the residual stream [d_model]
  blocks.L.mlp.hook_post   MLP activations concatenated after resid_mid [d_model + d_mlp], so the
                           residual connection passes through the node (a chain has no side inputs)
  logits                   the output (optionally the last position only)
Each step re-runs the model's own modules between two nodes, so it is exactly the model's forward.
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer

from interp.analysis.interaction import Chain
from interp.model import bos_token_id, validate_hook

_SUFFIX = {"hook_resid_pre": 0, "hook_resid_mid": 1, "mlp.hook_post": 2, "hook_resid_post": 3}


def _state(model: HookedTransformer, node: str) -> tuple[int, int]:
    """(block, stage): stage 0 before attention, 1 after it, 2 inside the MLP (concatenated node)."""
    if node == "logits":
        return model.cfg.n_layers, 0
    validate_hook(model, node)
    parts = node.split(".")
    stage = _SUFFIX.get(".".join(parts[2:]))
    if parts[0] != "blocks" or stage is None:
        raise ValueError(f"Node {node!r} is not supported: use blocks.L.hook_resid_pre|hook_resid_mid|hook_resid_post, "
                         "blocks.L.mlp.hook_post or 'logits'.")
    layer = int(parts[1])
    return (layer + 1, 0) if stage == 3 else (layer, stage)


def _mlp_post(mlp, h: torch.Tensor) -> torch.Tensor:
    if hasattr(mlp, "W_gate"):
        return mlp.act_fn(h @ mlp.W_gate) * (h @ mlp.W_in) + mlp.b_in
    return mlp.act_fn(h @ mlp.W_in + mlp.b_in)


def _advance(model: HookedTransformer, x: torch.Tensor, state: tuple[int, int], target: tuple[int, int], concat: bool) -> torch.Tensor:
    """Run the model's modules from `state` to `target`; `concat`: the target is an MLP node."""
    layer, stage = state
    d = model.cfg.d_model
    while (layer, stage) != target:
        block = model.blocks[layer]
        if stage == 0:
            h = block.ln1(x)
            x = x + block.hook_attn_out(block.attn(query_input=h, key_input=h, value_input=h))
            stage = 1
        elif stage == 1 and model.cfg.attn_only:
            layer, stage = layer + 1, 0
        elif stage == 1 and concat and target == (layer, 2):
            x = torch.cat([x, _mlp_post(block.mlp, block.ln2(x))], dim=-1)
            stage = 2
        elif stage == 1:
            x = x + block.mlp(block.ln2(x))
            layer, stage = layer + 1, 0
        else:  # stage 2: [resid_mid, mlp_post] -> resid_post
            x = x[..., :d] + x[..., d:] @ block.mlp.W_out + block.mlp.b_out
            layer, stage = layer + 1, 0
    return x


def _step(model: HookedTransformer, a: str, b: str, last_only: bool):
    sa, sb = _state(model, a), _state(model, b)
    if sb + (b == "logits",) <= sa + (a == "logits",):
        raise ValueError(f"Nodes must be in forward order: {a!r} does not come before {b!r}.")

    def step(x: torch.Tensor) -> torch.Tensor:
        x = _advance(model, x, sa, sb, concat=b.endswith("mlp.hook_post"))
        if b == "logits":
            x = model.unembed(model.ln_final(x) if hasattr(model, "ln_final") else x)
            return x[:, -1:] if last_only else x
        return x

    return step


def node_value(model: HookedTransformer, tokens: torch.Tensor, node: str) -> torch.Tensor:
    """The activations of a node [B, T, d] from a clean run."""
    layer = node.split(".")[1]
    names = [node] + ([f"blocks.{layer}.hook_resid_mid"] if node.endswith("mlp.hook_post") else [])
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=names, stop_at_layer=int(layer) + 1)
    if node.endswith("mlp.hook_post"):
        return torch.cat([cache[names[1]], cache[node]], dim=-1)
    return cache[node]


def transformer_chain(model: HookedTransformer, nodes: list[str], last_only: bool = False, skip_bos: bool = True) -> Chain:
    """A chain over `nodes` (ending with 'logits'). Batches are {"tokens": [B, T]} and, with `last_only`
    (one prediction per sequence, e.g. modular addition), {"labels": [B]}; otherwise the metric is next-token
    cross-entropy. With `skip_bos`, BOS positions are not counted in statistics and never ablated."""
    if nodes[-1] != "logits":
        raise ValueError(f"The last node must be 'logits', got {nodes[-1]!r}.")
    steps = [_step(model, a, b, last_only) for a, b in zip(nodes[:-1], nodes[1:])]
    bos = bos_token_id(model)

    def mask(batch: dict, T: int) -> torch.Tensor:
        tokens = batch["tokens"]
        m = tokens != bos if skip_bos else torch.ones_like(tokens, dtype=torch.bool)
        return m[:, tokens.shape[1] - T:]

    def metrics(logits: torch.Tensor, batch: dict) -> dict[str, float]:
        if last_only:
            last = logits[:, -1].double()
            return {"loss": torch.nn.functional.cross_entropy(last, batch["labels"]).item(),
                    "accuracy": (last.argmax(-1) == batch["labels"]).double().mean().item()}
        tokens = batch["tokens"]
        logp = logits[:, :-1].double().log_softmax(-1)
        nll = -logp.gather(-1, tokens[:, 1:, None])[..., 0]
        keep = tokens[:, 1:] != bos
        return {"loss": (nll[keep].mean()).item(), "accuracy": (logp.argmax(-1) == tokens[:, 1:])[keep].double().mean().item()}

    return Chain(list(nodes), steps, lambda batch: node_value(model, batch["tokens"], nodes[0]), mask, metrics)


def mlp_chain(mlp) -> Chain:
    """An `interp.analysis.toy_models.MLP` as nodes input, hidden.0, ..., logits; batches are {"x": [B, d_in], "labels": [B]}."""
    n = len(mlp.layers)
    nodes = ["input"] + [f"hidden.{i}" for i in range(n - 1)] + ["logits"]

    def make(i):
        return lambda x: mlp.layers[i](x) if i == n - 1 else torch.relu(mlp.layers[i](x))

    def metrics(logits: torch.Tensor, batch: dict) -> dict[str, float]:
        last = logits[:, 0].double()
        return {"loss": torch.nn.functional.cross_entropy(last, batch["labels"]).item(),
                "accuracy": (last.argmax(-1) == batch["labels"]).double().mean().item()}

    return Chain(nodes, [make(i) for i in range(n)], lambda batch: batch["x"][:, None],
                 lambda batch, T: torch.ones(len(batch["labels"]), T, dtype=torch.bool), metrics)
