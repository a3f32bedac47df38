"""The local replacement model of one prompt: the model with every MLP replaced
by its transcoder plus an error term, attention patterns and norm scales
frozen at their values on the prompt, so the residual stream is linear in
its sources.

Sources (the columns of an attribution graph):
- active transcoder features (layer, position, latent), contributing
  activation * W_dec[latent] to the residual stream at that layer's MLP output;
- error nodes (layer, position): MLP output minus the transcoder's output;
- token embeddings (position): hook_embed (+ hook_pos_embed).
What remains is a bias: transcoders' b_dec, attention biases, encoder biases.

Every quantity that reads the residual stream (a feature's pre-activation, a
logit) is then an affine function of the sources, and its exact direct
effects are the gradients of that function, injected at the reading point and
carried back through the frozen model: `edges(targets)` computes them for a
batch of targets in one batched backward pass (`is_grads_batched`) through
the model's own TransformerLens modules, so whatever the model does
(RMSNorm or LayerNorm, grouped key/value heads, attention biases, rotary) is
what the replacement does. MLP outputs are leaves of that graph: gradients
never pass through an MLP, which is what makes the effects direct.

The BOS position (if the prompt starts with one) has no feature nodes: its
MLP outputs are outliers transcoders are not trained on, so they count as error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformer_lens import HookedTransformer

from interp.data.tokens import token_mask
from interp.dictionary import Dictionary


def decoders(transcoders: dict[int, Dictionary], source: int) -> dict[int, torch.Tensor]:
    """{MLP layer: W [d_dict, d_model]} that layer `source`'s features write to: their own layer's W_dec, and for
    a cross-layer transcoder's view (`W_dec_cross` [d_dict, n_layers - source - 1, d_model]) every later layer."""
    tc = transcoders[source]
    cross = getattr(tc, "W_dec_cross", None)
    later = {} if cross is None else {source + 1 + i: cross[:, i].float() for i in range(cross.shape[1])}
    return {source: tc.W_dec.float(), **later}


@dataclass(frozen=True)
class Target:
    """A quantity that reads the residual stream: a feature's pre-activation or a (demeaned) logit."""

    kind: str  # "feature" or "logit"
    layer: int  # the transcoder's layer; n_layers for logits
    position: int
    index: int  # latent index, or token id


class LocalReplacement:
    """The frozen, linear replacement of `model` on one prompt, with `transcoders[layer]` for every layer."""

    def __init__(self, model: HookedTransformer, transcoders: dict[int, Dictionary], tokens: torch.Tensor):
        self.model, self.transcoders = model, transcoders
        self.n_layers = model.cfg.n_layers
        missing = [layer for layer in range(self.n_layers) if layer not in transcoders]
        if missing:
            raise ValueError(f"A local replacement needs a transcoder for every layer; missing layers {missing}.")
        for layer, tc in transcoders.items():
            expected = (f"blocks.{layer}.ln2.hook_normalized", f"blocks.{layer}.hook_mlp_out")
            if (tc.cfg.hook_in, tc.cfg.hook_out) != expected:
                raise ValueError(f"Transcoder for layer {layer} maps {tc.cfg.hook_in} -> {tc.cfg.hook_out}; "
                                 f"expected {expected[0]} -> {expected[1]}.")
        self.tokens = tokens.reshape(1, -1)
        self.n_pos = self.tokens.shape[1]
        self._record()
        self._build()

    # --- the real forward pass ------------------------------------------------
    @torch.no_grad()
    def _record(self) -> None:
        names = lambda n: n.endswith(("hook_scale", "hook_pattern", "ln2.hook_normalized", "hook_mlp_out", "hook_embed",
                                      "hook_pos_embed"))
        logits, cache = self.model.run_with_cache(self.tokens, names_filter=names)
        self.cache = {k: v.detach() for k, v in cache.items()}
        self.logits = logits[0].detach()
        self.feature_positions = token_mask(self.model, self.tokens)[0]
        self.codes, self.errors = [], []
        for layer in range(self.n_layers):
            tc, x = self.transcoders[layer], self.mlp_in(layer)
            self.codes.append(tc.encode(x.to(tc.W_enc.dtype)).float() * self.feature_positions[:, None])
        for layer in range(self.n_layers):  # a cross-layer transcoder's earlier layers write here too
            sparse_out = self.transcoders[layer].b_dec.float() + sum(
                self.codes[source] @ self.decoders(source)[layer] for source in range(layer + 1) if layer in self.decoders(source))
            self.errors.append(self.cache[f"blocks.{layer}.hook_mlp_out"][0] - sparse_out - self._skip(layer, self.mlp_in(layer)))

    def decoders(self, source: int) -> dict[int, torch.Tensor]:
        return decoders(self.transcoders, source)

    def mlp_in(self, layer: int) -> torch.Tensor:
        """[n_pos, d_model] the MLP's (normalised) input on the prompt."""
        return self.cache[f"blocks.{layer}.ln2.hook_normalized"][0]

    def _skip(self, layer: int, x: torch.Tensor) -> torch.Tensor | float:
        tc = self.transcoders[layer]
        return (x.to(tc.W_enc.dtype) @ tc.W_skip).float() if tc.cfg.skip else 0.0

    @property
    def embedding(self) -> torch.Tensor:
        """[n_pos, d_model] what the embedding nodes write: token (+ positional) embedding."""
        pos = self.cache.get("hook_pos_embed")
        return self.cache["hook_embed"][0] + (0.0 if pos is None else pos[0])

    # --- the frozen linear replay ---------------------------------------------
    def _replay(self, embed: torch.Tensor, mlp_sparse: list[torch.Tensor]):
        """Run the frozen model with given source values; returns (mlp inputs per layer, logits)."""
        mlp_in: list[torch.Tensor] = []
        hooks = [("hook_embed", lambda act, hook: embed[None])]
        if "hook_pos_embed" in self.cache:
            hooks.append(("hook_pos_embed", lambda act, hook: torch.zeros_like(act)))
        frozen = lambda act, hook: self.cache[hook.name]
        hooks += [(name, frozen) for name in self.cache if name.endswith(("hook_scale", "hook_pattern"))]
        for layer in range(self.n_layers):
            hooks.append((f"blocks.{layer}.ln2.hook_normalized", lambda act, hook: mlp_in.append(act)))
            hooks.append((f"blocks.{layer}.hook_mlp_out",
                          lambda act, hook, layer=layer: (mlp_sparse[layer] + self._skip(layer, mlp_in[layer][0]))[None]))
        logits = self.model.run_with_hooks(self.tokens, fwd_hooks=hooks)
        return [m[0] for m in mlp_in], logits[0]

    def _build(self) -> None:
        """The replay graph whose leaves are the sources, and the bias of every reading point."""
        with torch.no_grad():
            b_dec = [self.transcoders[layer].b_dec.float().expand(self.n_pos, -1) for layer in range(self.n_layers)]
            self.bias_mlp_in, self.bias_logits = self._replay(torch.zeros_like(self.embedding), b_dec)
        self.embed_leaf = self.embedding.clone().requires_grad_()
        self.mlp_leaves = [(self.cache[f"blocks.{layer}.hook_mlp_out"][0] - self._skip(layer, self.mlp_in(layer)))
                           .clone().requires_grad_() for layer in range(self.n_layers)]
        with torch.enable_grad():
            self.graph_mlp_in, self.graph_logits = self._replay(self.embed_leaf, self.mlp_leaves)

    def intervene(self, interventions, attention: str = "frozen", downstream: str = "free") -> torch.Tensor:
        """Logits [batch, n_pos, d_vocab] with transcoder features changed (interp.interventions.replacement)."""
        from interp.interventions.replacement import replacement_logits

        return replacement_logits(self, interventions, attention, downstream)

    # --- reading points -------------------------------------------------------
    def reading_direction(self, target: Target) -> torch.Tensor:
        """The vector that reads the target from its reading point (an MLP input or the logits)."""
        if target.kind == "feature":
            return self.transcoders[target.layer].W_enc[:, target.index].float()
        vocab = self.logits.shape[-1]
        direction = torch.full((vocab,), -1.0 / vocab, device=self.logits.device)
        direction[target.index] += 1.0
        return direction

    def value(self, target: Target) -> float:
        """The target's value on the prompt: a pre-activation, or a logit minus the mean logit."""
        if target.kind == "logit":
            row = self.logits[target.position]
            return (row[target.index] - row.mean()).item()
        tc = self.transcoders[target.layer]
        x = self.mlp_in(target.layer)[target.position : target.position + 1]
        return tc.pre_acts(x.to(tc.W_enc.dtype), torch.tensor([target.index]))[0, 0].item()

    def bias(self, target: Target) -> float:
        """The part of the target's value that no source explains (biases of the frozen model)."""
        if target.kind == "logit":
            return (self.bias_logits[target.position] @ self.reading_direction(target)).item()
        tc = self.transcoders[target.layer]
        x = self.bias_mlp_in[target.layer][target.position : target.position + 1]
        return tc.pre_acts(x.to(tc.W_enc.dtype), torch.tensor([target.index]))[0, 0].item()

    # --- sources ----------------------------------------------------------------
    def active_features(self) -> torch.Tensor:
        """[n_active, 3] (layer, position, latent) of every non-zero feature, in that order."""
        rows = [torch.cat([torch.full((len(p), 1), layer), p], 1)
                for layer, codes in enumerate(self.codes) for p in [codes.nonzero().cpu()]]
        return torch.cat(rows).long()

    def activations(self, features: torch.Tensor) -> torch.Tensor:
        """[n] the activation of each (layer, position, latent) row."""
        return torch.stack([self.codes[layer][pos, idx] for layer, pos, idx in features.tolist()]).cpu() if len(features) \
            else torch.zeros(0)

    def edges(self, targets: list[Target], features: torch.Tensor) -> torch.Tensor:
        """Direct effects [len(targets), n_features + n_layers * n_pos + n_pos] on each target of each source:
        the given features (rows of `active_features()`), then error nodes (layer-major), then embeddings.
        Computed on the model's device, returned on the CPU."""
        outputs, grad_outputs = self._seeds(targets)
        grads = torch.autograd.grad(outputs, [self.embed_leaf, *self.mlp_leaves], grad_outputs, retain_graph=True,
                                    allow_unused=True, materialize_grads=True, is_grads_batched=True)
        grads = [g.expand(len(targets), *g.shape) if g.dim() == 2 else g for g in grads]  # unused: unbatched zeros
        g_embed, g_mlp = grads[0], grads[1:]  # [batch, n_pos, d_model] each
        with torch.no_grad():
            return self._edges_from_grads(g_embed, g_mlp, features)

    def _edges_from_grads(self, g_embed, g_mlp, features):
        features = features.to(g_embed.device)
        feature_edges = g_embed.new_zeros(len(g_embed), len(features))
        for layer in range(self.n_layers):
            rows = (features[:, 0] == layer).nonzero()[:, 0]
            if len(rows):
                pos, idx = features[rows, 1], features[rows, 2]
                activation = self.codes[layer][pos, idx][:, None]
                feature_edges[:, rows] = sum((g_mlp[target][:, pos] * (activation * W[idx])).sum(-1)  # into every layer it writes
                                             for target, W in self.decoders(layer).items())
        error_edges = torch.stack([(g * e).sum(-1) for g, e in zip(g_mlp, self.errors)], 1).flatten(1)
        embed_edges = (g_embed * self.embedding).sum(-1)
        return torch.cat([feature_edges, error_edges, embed_edges], 1).cpu()

    def _seeds(self, targets: list[Target]):
        """The graph outputs the targets read, and batched one-hot gradients injecting their directions."""
        outputs, grad_outputs = [], []
        for layer in sorted({t.layer for t in targets}):
            out = self.graph_logits if layer == self.n_layers else self.graph_mlp_in[layer]
            seed = out.new_zeros(len(targets), *out.shape)
            for b, t in enumerate(targets):
                if t.layer == layer:
                    seed[b, t.position] = self.reading_direction(t)
            outputs.append(out)
            grad_outputs.append(seed)
        return outputs, grad_outputs
