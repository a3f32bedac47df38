"""Cross-layer transcoders (CLTs; Ameisen et al., "Circuit Tracing: Revealing
Computational Graphs in Language Models", 2025).

Layer l's features read that layer's MLP input x_l (`blocks.l.ln2.hook_normalized`)
and write to the MLP outputs of l and of every later layer:

    codes_l = act(x_l W_enc[l] + b_enc[l])                     [batch, d_dict]
    y_hat_m = sum_{l <= m} codes_l W_dec[l][:, m - l] + b_dec[m]  [batch, d_model]
    loss    = sum_m ||y_hat_m - y_m||^2   (summed over d, averaged over tokens)

`act` is TopK (k per layer and token; trained through the sparse kernels:
one fused encode and one gather-sum decode per source layer, the decode
writing all L - l target layers at once) or JumpReLU (an L0 penalty through
the straight-through estimators of `saes.jumprelu`). Each latent's decoder,
all its target layers together, has unit norm in training.

A CLT whose cross-layer decoders (W_dec[l][:, 1:]) are zero is exactly the
set of per-layer transcoders it was built from (`from_transcoders`);
training starts there. `layer_transcoders()` gives the per-layer view that
`interp.circuits` uses: one transcoder per layer whose `W_dec_cross`
[d_dict, L - l - 1, d_model] holds what its features write to later layers.

Files (`save` / `load_clt`): circuit-tracer's CLT layout, one pair per layer:
`W_enc_{l}.safetensors` (W_enc_{l} [d_dict, d_model], b_enc_{l}, b_dec_{l},
threshold_{l} for JumpReLU) and `W_dec_{l}.safetensors` (W_dec_{l}
[d_dict, L - l, d_model]), as circuit-tracer's `load_clt` reads them, plus our
`clt.json` (the CLTConfig: activation, k, hooks, training). circuit-tracer has
no TopK activation: a TopK CLT's tensors load there, but only our loader
knows to apply TopK.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from interp import __version__
from interp.config import from_dict, load_json, save_json
from interp.dictionary import Dictionary, architecture, read_weights
from interp.kernels import sparse_decode, topk_encode

CFG_FILE = "clt.json"
ARCHS = ("topk", "jumprelu")


@dataclass(frozen=True)
class CLTConfig:
    """A cross-layer transcoder over layers 0..n_layers-1 of a model."""

    n_layers: int
    d_model: int
    d_dict: int  # latents per layer
    arch: str = "topk"  # "topk" (k per layer and token) or "jumprelu"
    k: int = 32  # TopK: active latents per layer and token
    l0_coeff: float = 0.01  # JumpReLU: L0 coefficient (summed over layers)
    bandwidth: float = 0.05  # JumpReLU: straight-through estimator bandwidth
    threshold_init: float = 0.001  # JumpReLU: initial threshold
    hook_in: str = "blocks.{layer}.ln2.hook_normalized"
    hook_out: str = "blocks.{layer}.hook_mlp_out"
    model: str = ""
    dtype: str = "float32"
    training: dict = field(default_factory=dict)  # what it was trained on: source, tokens, seed, ...
    version: str = __version__

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"CLT arch {self.arch!r}: expected one of {ARCHS}.")
        if min(self.n_layers, self.d_model, self.d_dict) <= 0:
            raise ValueError(f"n_layers, d_model, d_dict must be positive, got {self.n_layers}, {self.d_model}, {self.d_dict}.")
        if self.arch == "topk" and not 0 < self.k <= self.d_dict:
            raise ValueError(f"A TopK CLT needs 0 < k <= d_dict, got k={self.k}, d_dict={self.d_dict}.")

    def hooks(self, layer: int) -> tuple[str, str]:
        return self.hook_in.format(layer=layer), self.hook_out.format(layer=layer)


class CrossLayerTranscoder(nn.Module):
    """Parameters: W_enc [L, d_model, d_dict], b_enc [L, d_dict], W_dec[l] [d_dict, L - l, d_model],
    b_dec [L, d_model], and for JumpReLU log_threshold [L, d_dict]."""

    def __init__(self, cfg: CLTConfig):
        super().__init__()
        self.cfg = cfg
        L, d, f, dtype = cfg.n_layers, cfg.d_model, cfg.d_dict, getattr(torch, cfg.dtype)
        self.W_enc = nn.Parameter(torch.zeros(L, d, f, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(L, f, dtype=dtype))
        self.W_dec = nn.ParameterList([nn.Parameter(torch.zeros(f, L - l, d, dtype=dtype)) for l in range(L)])
        self.b_dec = nn.Parameter(torch.zeros(L, d, dtype=dtype))
        if cfg.arch == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((L, f), math.log(cfg.threshold_init), dtype=dtype))

    n_layers = property(lambda self: self.cfg.n_layers)

    @property
    def threshold(self) -> torch.Tensor:
        """[L, d_dict] JumpReLU thresholds."""
        return self.log_threshold.exp()

    # --- inference ------------------------------------------------------------
    def pre_acts(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """[batch, d_model] MLP input of `layer` -> [batch, d_dict]."""
        return x @ self.W_enc[layer] + self.b_enc[layer]

    def layer_codes(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """[batch, d_model] -> dense codes [batch, d_dict] of `layer`'s features."""
        pre = self.pre_acts(x, layer)
        if self.cfg.arch == "jumprelu":
            from saes.jumprelu import JumpReLUFunction

            return JumpReLUFunction.apply(pre, self.threshold[layer], self.cfg.bandwidth)
        from saes.topk import topk_codes

        return topk_codes(pre, self.cfg.k)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, L, d_model] MLP inputs -> [batch, L, d_dict] codes."""
        return torch.stack([self.layer_codes(x[:, l], l) for l in range(self.n_layers)], 1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """[batch, L, d_dict] -> [batch, L, d_model] every MLP output."""
        out = self.b_dec.expand(len(codes), -1, -1).clone()
        for l in range(self.n_layers):
            out[:, l:] += torch.einsum("bf,fmd->bmd", codes[:, l], self.W_dec[l])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    # --- training -------------------------------------------------------------
    def training_forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """x [batch, L, d_model] -> (recon [batch, L, d_model], sparsity loss, L0 summed over layers).

        TopK: one fused TopK encode for all layers, then per source layer one sparse decode into all its target layers."""
        batch, L = len(x), self.n_layers
        recon = self.b_dec.expand(batch, -1, -1).clone()
        sparsity, l0 = x.new_zeros(()), 0.0
        if self.cfg.arch == "topk":  # every layer's encoder as one stack: values, indices [L, batch, k]
            values, indices = topk_encode(x.transpose(0, 1), self.W_enc, self.b_enc, self.cfg.k)
        for l in range(L):
            W = self.W_dec[l].flatten(1)  # [d_dict, (L - l) * d_model]: one decode writes every target layer
            if self.cfg.arch == "topk":
                written = sparse_decode(values[l], indices[l], W)
                l0 += (values[l] != 0).sum(-1).float().mean().item()
            else:
                from saes.jumprelu import StepFunction

                pre = self.pre_acts(x[:, l], l)
                codes = self.layer_codes(x[:, l], l)
                written = codes @ W
                l0 += (codes != 0).sum(-1).float().mean().item()
                sparsity = sparsity + self.cfg.l0_coeff * StepFunction.apply(pre, self.threshold[l], self.cfg.bandwidth).sum(-1).mean()
            recon[:, l:] += written.view(batch, L - l, -1)
        return recon, sparsity, l0

    # --- conversions ------------------------------------------------------------
    @classmethod
    def from_transcoders(cls, transcoders: dict[int, Dictionary], **fields) -> CrossLayerTranscoder:
        """The CLT equal to per-layer transcoders (one per layer 0..L-1, same arch and width): own-layer
        decoders copied, cross-layer decoders zero."""
        L = len(transcoders)
        if sorted(transcoders) != list(range(L)):
            raise ValueError(f"from_transcoders needs one transcoder for each layer 0..{L - 1}; got layers {sorted(transcoders)}.")
        first = transcoders[0].cfg
        for l, tc in transcoders.items():
            c = tc.cfg
            if c.arch != first.arch or c.d_dict != first.d_dict or c.skip or c.subtract_b_dec or c.arch not in ARCHS:
                raise ValueError(f"Layer {l}'s transcoder ({c.arch}, d_dict {c.d_dict}, skip {c.skip}, subtract_b_dec "
                                 f"{c.subtract_b_dec}) cannot join a CLT: all must be {ARCHS} transcoders of one arch and "
                                 "width, without skip path or input centring.")
        keep = {"k": first.k, "l0_coeff": first.l0_coeff, "bandwidth": first.bandwidth, "threshold_init": first.threshold_init}
        cfg = CLTConfig(n_layers=L, d_model=first.d_in, d_dict=first.d_dict, arch=first.arch, model=first.model,
                        dtype=first.dtype, **{**{k: v for k, v in keep.items() if v}, **fields})
        clt = cls(cfg)
        with torch.no_grad():
            for l, tc in transcoders.items():
                clt.W_enc[l].copy_(tc.W_enc)
                clt.b_enc[l].copy_(tc.b_enc)
                clt.W_dec[l][:, 0].copy_(tc.W_dec)
                clt.b_dec[l].copy_(tc.b_dec)
                if cfg.arch == "jumprelu":
                    clt.log_threshold[l].copy_(tc.log_threshold)
        return clt

    def layer_transcoders(self) -> dict[int, Dictionary]:
        """{layer: transcoder} views for interp.circuits (copies): layer l's encoder, its own-layer decoder as
        W_dec, and `W_dec_cross` [d_dict, L - l - 1, d_model] for the later layers it writes to."""
        from transcoders.config import transcoder_config

        out = {}
        for l in range(self.n_layers):
            extra = {"k": self.cfg.k} if self.cfg.arch == "topk" else {"l0_coeff": self.cfg.l0_coeff, "bandwidth": self.cfg.bandwidth}
            cfg = transcoder_config(self.cfg.d_model, l, self.cfg.arch, d_dict=self.cfg.d_dict, model=self.cfg.model,
                                    dtype=self.cfg.dtype, **extra)
            tc = architecture(self.cfg.arch)(cfg.replace(**dict(zip(("hook_in", "hook_out"), self.cfg.hooks(l)))))
            with torch.no_grad():
                tc.W_enc.copy_(self.W_enc[l])
                tc.b_enc.copy_(self.b_enc[l])
                tc.W_dec.copy_(self.W_dec[l][:, 0])
                tc.b_dec.copy_(self.b_dec[l])
                if self.cfg.arch == "jumprelu":
                    tc.log_threshold.copy_(self.log_threshold[l])
            tc.W_dec_cross = self.W_dec[l][:, 1:].detach().clone()
            out[l] = tc.to(self.b_dec.device)
        return out

    @torch.no_grad()
    def fold_scales(self, scale_in: list[float], scale_out: list[float]) -> None:
        """Trained on x_l * scale_in[l] -> y_m * scale_out[m]; make it act on raw activations."""
        s_out = torch.tensor(scale_out, dtype=self.b_dec.dtype, device=self.b_dec.device)
        for l in range(self.n_layers):
            self.W_enc[l].mul_(scale_in[l])
            self.W_dec[l].div_(s_out[l:, None])
        self.b_dec.div_(s_out[:, None])

    # --- files ------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write circuit-tracer's per-layer CLT files and clt.json into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for l in range(self.n_layers):
            enc = {f"W_enc_{l}": self.W_enc[l].T, f"b_enc_{l}": self.b_enc[l], f"b_dec_{l}": self.b_dec[l]}
            if self.cfg.arch == "jumprelu":
                enc[f"threshold_{l}"] = self.threshold[l]
            for name, tensors in ((f"W_enc_{l}", enc), (f"W_dec_{l}", {f"W_dec_{l}": self.W_dec[l]})):
                tmp = folder / f"{name}.safetensors.tmp"
                save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
                tmp.replace(folder / f"{name}.safetensors")
        save_json(self.cfg, folder / CFG_FILE)
        return folder


def load_clt(folder: str | Path, device: str = "cpu") -> CrossLayerTranscoder:
    """Load a CLT written by `CrossLayerTranscoder.save` (clt.json + circuit-tracer's per-layer files), or a
    JumpReLU CLT saved by circuit-tracer itself (its files, and its config.yaml for hooks and model if present)."""
    folder = Path(folder)
    if (folder / CFG_FILE).is_file():
        cfg = from_dict(CLTConfig, load_json(folder / CFG_FILE), source=str(folder / CFG_FILE))
    else:
        from interp.io.circuit_tracer import clt_fields

        cfg = CLTConfig(**clt_fields(folder))
    clt = CrossLayerTranscoder(cfg)
    L, d, f = cfg.n_layers, cfg.d_model, cfg.d_dict
    with torch.no_grad():
        for l in range(L):
            shapes = {f"W_enc_{l}": (f, d), f"b_enc_{l}": (f,), f"b_dec_{l}": (d,)}
            if cfg.arch == "jumprelu":
                shapes[f"threshold_{l}"] = (f,)
            enc = read_weights(folder / f"W_enc_{l}.safetensors", {k: torch.empty(s, dtype=clt.b_dec.dtype) for k, s in shapes.items()})
            dec = read_weights(folder / f"W_dec_{l}.safetensors", {f"W_dec_{l}": clt.W_dec[l]})
            clt.W_enc[l].copy_(enc[f"W_enc_{l}"].T)
            clt.b_enc[l].copy_(enc[f"b_enc_{l}"])
            clt.b_dec[l].copy_(enc[f"b_dec_{l}"])
            clt.W_dec[l].copy_(dec[f"W_dec_{l}"])
            if cfg.arch == "jumprelu":
                clt.log_threshold[l].copy_(enc[f"threshold_{l}"].clamp_min(torch.finfo(clt.b_dec.dtype).tiny).log())
    return clt.to(device)


def with_training(cfg: CLTConfig, **training) -> CLTConfig:
    return replace(cfg, training={**cfg.training, **training})
