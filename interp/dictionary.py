"""The dictionary protocol every SAE and transcoder satisfies, and its file format.

A dictionary maps activations x [batch, d_in] to codes [batch, d_dict] and
back to y [batch, d_out]:  codes = act(pre), pre = (x - b_dec) W_enc + b_enc
(SAEs subtract b_dec; transcoders do not), y = codes W_dec + b_dec.
Architectures subclass `Dictionary` and override only what makes them
different: `activation`, `sparsity_loss`, and optionally `init_from_data`.

What an architecture file (one file in saes/, e.g. saes/topk.py) declares:
- `@register("name")` on the class, and the same name in pyproject.toml under
  `[project.entry-points."interp.dictionaries"]` (`name = "saes.file:Class"`),
  so `architecture(name)` and `Dictionary.load` find it in a process that
  never imported saes. Registering a taken name with another class is an
  error; re-registering the same class (same module and qualified name, e.g.
  after a module reload) replaces it. A config whose `arch` is not the
  class's registered name is an error.
- `defaults(cfg)`: its values for the knobs a config leaves as None (k,
  l1_coeff, l0_coeff, beta, aux_k); knobs it does not use are recorded as off (0).
- `sweep_fields`: the DictionaryConfig fields a sweep varies (`interp train`
  accepts comma-separated values for exactly these).
- `dead_window(tokens, batch_size)`: the dead-latent window for AuxK when the
  config leaves `dead_tokens` as None (default: a tenth of the run).
- `stacking` (and `stacked_forward`): how same-shaped members of a sweep
  train as one stack (`interp.training.stacked`).
- `validate(cfg)`: what it needs from a config, with a clear error.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from interp import __version__
from interp.config import from_dict, load_json, save_json
from interp.errors import check_memory

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae.safetensors"


@dataclass(frozen=True)
class DictionaryConfig:
    """Everything needed to rebuild a dictionary and to know what it reads and writes."""

    arch: str
    d_in: int
    d_dict: int = 0  # latents; 0: 8 x d_in
    d_out: int = 0  # 0: same as d_in
    hook_in: str = ""
    hook_out: str = ""  # "": same as hook_in
    model: str = ""
    # The knobs below left as None take the architecture's default (its `defaults`) when the dictionary is built.
    k: int | None = None  # TopK / BatchTopK / g-SAE: active latents per token (default 32)
    l1_coeff: float | None = None  # ReLU: decoder-norm-weighted L1 coefficient (default 5)
    l0_coeff: float | None = None  # JumpReLU: L0 coefficient (default 0.01)
    bandwidth: float = 0.05  # JumpReLU: straight-through estimator bandwidth
    threshold_init: float = 0.001  # JumpReLU: initial threshold
    beta: float | None = None  # g-SAE: weight of the loss-gradient sensitivity in TopK selection (0 = TopK; default 1)
    aux_k: int | None = None  # AuxK: dead latents used to model the residual (0: off; default d_in/2 for the TopK family)
    aux_coeff: float = 1 / 32  # AuxK: weight of the auxiliary loss
    dead_tokens: int | None = None  # AuxK: a latent silent this many tokens is dead (default: a tenth of the run)
    subtract_b_dec: bool = True  # SAEs centre inputs by b_dec; transcoders do not
    skip: bool = False  # skip transcoders: a linear path W_skip [d_in, d_out] beside the sparse one
    prefixes: list[int] = field(default_factory=list)  # Matryoshka: cumulative prefix widths ending at d_dict ([]: one)
    dtype: str = "float32"
    training: dict = field(default_factory=dict)  # what it was trained on: source, tokens, seed, ...
    version: str = __version__

    def __post_init__(self):
        object.__setattr__(self, "prefixes", [int(w) for w in self.prefixes])  # a list, as JSON gives it back
        if self.d_out == 0:
            object.__setattr__(self, "d_out", self.d_in)
        if self.d_dict == 0:
            object.__setattr__(self, "d_dict", 8 * self.d_in)
        if self.hook_out == "":
            object.__setattr__(self, "hook_out", self.hook_in)
        for name in ("d_in", "d_dict", "d_out"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.dtype not in ("float32", "float64", "bfloat16", "float16"):
            raise ValueError(f"dtype {self.dtype!r} is not one of float32, float64, bfloat16, float16.")
        itemsize = {"float32": 4, "float64": 8}.get(self.dtype, 2)
        check_memory(itemsize * self.d_dict * (self.d_in + self.d_out), f"A {self.arch} dictionary of d_in={self.d_in}, "
                     f"d_dict={self.d_dict}, d_out={self.d_out}", "check d_dict (--width)")  # before allocating it

    def replace(self, **changes) -> DictionaryConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class TrainingStep:
    """One training forward: the reconstruction [batch, d_out] and the codes, either
    dense (`codes` [batch, d_dict], with `pre`) or sparse (`values`, `indices` [batch, k])."""

    recon: torch.Tensor
    pre: torch.Tensor | None = None
    codes: torch.Tensor | None = None
    values: torch.Tensor | None = None
    indices: torch.Tensor | None = None

    def fired(self, d_dict: int) -> torch.Tensor:
        """[d_dict] bool: latents active on at least one token of the batch."""
        if self.codes is not None:
            return (self.codes != 0).any(0)
        out = torch.zeros(d_dict, dtype=torch.bool, device=self.values.device)
        return out.index_fill_(0, self.indices[self.values != 0], True)

    def l0(self) -> float:
        active = self.codes if self.codes is not None else self.values
        return (active != 0).sum(-1).float().mean().item()


# Knobs an architecture does not use are recorded as off.
OFF = {"k": 0, "l1_coeff": 0.0, "l0_coeff": 0.0, "beta": 0.0, "aux_k": 0}
ENTRY_POINTS = "interp.dictionaries"
_REGISTRY: dict[str, type[Dictionary]] = {}


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(name: str):
    """Class decorator: make an architecture loadable by its `arch` name.

    A name taken by another class (another module or qualified name) is an error; the same
    class registered again (a module reload, a notebook cell run twice) replaces the old one."""

    def wrap(cls):
        old = _REGISTRY.get(name)
        if old is not None and _qualified(old) != _qualified(cls):
            raise ValueError(f"Architecture name {name!r} is already registered to {_qualified(old)}; cannot register "
                             f"{_qualified(cls)} under it. Choose another name.")
        cls.arch = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def architecture_names() -> list[str]:
    """Every architecture name: registered in this process or declared by an installed package's entry points."""
    return sorted(set(_REGISTRY) | {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)})


def architecture(name: str) -> type[Dictionary]:
    """The class registered as `name`, loading it from the installed entry points if needed."""
    if name not in _REGISTRY:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINTS):
            if ep.name == name:
                cls = ep.load()
                if name not in _REGISTRY and isinstance(cls, type) and issubclass(cls, Dictionary):
                    register(name)(cls)  # a third-party class declared only by its entry point
                if _REGISTRY.get(name) is not cls:
                    raise ValueError(f"Entry point {name!r} ({ep.value}) names {_qualified(cls)}, which is registered as "
                                     f"{getattr(cls, 'arch', '')!r}; make the entry-point name and @register name agree.")
    if name not in _REGISTRY:
        raise ValueError(f"Unknown architecture {name!r}; known: {architecture_names() or 'none'}. Install the package "
                         "that provides it (pip install -e . declares the built-in ones) or register it with @register.")
    return _REGISTRY[name]


class Dictionary(nn.Module):
    """Base class: parameters, encode/decode, the reconstruction loss, save/load."""

    arch: ClassVar[str] = ""
    unit_norm_decoder: ClassVar[bool] = True  # False: decoder norms are folded on save instead
    needs: ClassVar[tuple[str, ...]] = ()  # extra stream keys training_forward takes (e.g. "grad")
    # Whether interp.training.stacked may train several of these as one stack (one optimizer step for all);
    # `stacked_forward` says how their forward runs.
    stacking: ClassVar[bool] = True
    sweep_fields: ClassVar[tuple[str, ...]] = ("d_dict",)  # DictionaryConfig fields a sweep varies

    def __init__(self, cfg: DictionaryConfig):
        super().__init__()
        if cfg.arch != self.arch:
            raise ValueError(f"The config's arch is {cfg.arch!r} but {type(self).__name__} is registered as {self.arch!r}; "
                             f"build it with architecture({cfg.arch!r})(cfg), or fix `arch` in the config.")
        cfg = self.completed(cfg)
        self.validate(cfg)
        self.cfg = cfg
        dtype = getattr(torch, cfg.dtype)
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_dict, dtype=dtype))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_dict, dtype=dtype))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_dict, cfg.d_out, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_out, dtype=dtype))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_out, dtype=dtype))

    @classmethod
    def validate(cls, cfg: DictionaryConfig) -> None:
        """Raise if `cfg` lacks what this architecture needs."""

    @classmethod
    def defaults(cls, cfg: DictionaryConfig) -> dict:
        """This architecture's values for the knobs (`OFF`'s keys) that `cfg` leaves as None."""
        return {}

    @classmethod
    def completed(cls, cfg: DictionaryConfig) -> DictionaryConfig:
        """`cfg` with every None knob set: the architecture's default, or off (0) for knobs it does not use."""
        unset = [name for name in OFF if getattr(cfg, name) is None]
        if not unset:
            return cfg
        defaults = {**OFF, **cls.defaults(cfg)}
        return cfg.replace(**{name: defaults[name] for name in unset})

    @classmethod
    def dead_window(cls, tokens: int, batch_size: int) -> int:
        """Tokens a latent may stay silent before AuxK treats it as dead, for a run of `tokens` tokens
        in batches of `batch_size` (used when the config leaves `dead_tokens` as None)."""
        return max(batch_size, tokens // 10)

    d_in = property(lambda self: self.cfg.d_in)
    d_out = property(lambda self: self.cfg.d_out)
    d_dict = property(lambda self: self.cfg.d_dict)

    # --- the forward pass -------------------------------------------------
    def centred(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.b_dec if self.cfg.subtract_b_dec else x

    def pre_acts(self, x: torch.Tensor, latents: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, d_in] -> [batch, d_dict] (or [batch, len(latents)] for a subset of latents)."""
        if latents is None:
            return self.centred(x) @ self.W_enc + self.b_enc
        return self.centred(x) @ self.W_enc[:, latents] + self.b_enc[latents]

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Pre-activations -> codes, both [batch, d_dict]."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_acts(x))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """[batch, d_dict] -> [batch, d_out]"""
        return codes @ self.W_dec + self.b_dec

    def skip(self, x: torch.Tensor) -> torch.Tensor | float:
        """The linear skip path of skip transcoders ([batch, d_in] -> [batch, d_out]); 0 otherwise."""
        return x @ self.W_skip if self.cfg.skip else 0.0

    def with_skip(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """out plus the skip path of x; out itself (no pass over it adding 0) without one."""
        return out + self.skip(x) if self.cfg.skip else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.with_skip(self.decode(self.encode(x)), x)

    # --- training ---------------------------------------------------------
    def training_codes(self, x: torch.Tensor, **extras: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pre, codes) in training mode; `extras` holds the keys named in `needs`."""
        pre = self.pre_acts(x)
        return pre, self.activation(pre)

    def training_forward(self, x: torch.Tensor, **extras: torch.Tensor) -> TrainingStep:
        pre, codes = self.training_codes(x, **extras)
        return TrainingStep(self.with_skip(self.decode(codes), x), pre=pre, codes=codes)

    def sparsity_loss(self, step: TrainingStep) -> torch.Tensor:
        return step.recon.new_zeros(())

    @classmethod
    def stacked_forward(cls, stack: nn.Module, members: list[Dictionary], x: torch.Tensor) -> list[TrainingStep]:
        """The training forward of E members whose parameters are slices of `stack`'s ([E, ...]), on one batch
        x [batch, d_in]. By default each member runs its own `training_forward` (batching dense codes costs more
        than it saves: benchmarks/bench_stacked.py); architectures with a batched path override this."""
        return [m.training_forward(x) for m in members]

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, target: torch.Tensor, generator: torch.Generator) -> None:
        """Random unit decoder rows, encoder = decoder transpose, b_dec = mean target."""
        W = torch.randn(self.d_dict, self.d_out, generator=generator, dtype=torch.float64)
        W = W / W.norm(dim=1, keepdim=True)
        self.W_dec.copy_(W.to(self.W_dec.dtype))
        if self.d_in == self.d_out:
            self.W_enc.copy_(self.W_dec.T)
        else:
            W_enc = torch.randn(self.d_in, self.d_dict, generator=generator, dtype=torch.float64)
            self.W_enc.copy_((W_enc / W_enc.norm(dim=0, keepdim=True)).to(self.W_enc.dtype))
        self.b_dec.copy_(target.double().mean(0).to(self.b_dec.dtype))

    # --- folding for export -----------------------------------------------
    @torch.no_grad()
    def fold_scales(self, scale_in: float, scale_out: float) -> None:
        """The dictionary was trained on x*scale_in -> y*scale_out; make it act on raw x and y.

        pre((x*s_in)) uses (x*s_in - b_dec) W_enc; for SAEs s_in == s_out so
        b_dec/s_out and W_enc*s_in give identical pre-activations.
        """
        self.W_enc.mul_(scale_in)
        self.W_dec.div_(scale_out)
        self.b_dec.div_(scale_out)
        if self.cfg.skip:
            self.W_skip.mul_(scale_in / scale_out)

    @torch.no_grad()
    def fold_decoder_norms(self) -> None:
        """Rescale latents so decoder rows have unit norm; codes scale inversely, output unchanged."""
        norms = self.W_dec.norm(dim=1).clamp_min(1e-12)
        self.W_dec.div_(norms[:, None])
        self.W_enc.mul_(norms)
        self.b_enc.mul_(norms)
        self._scale_thresholds(norms)

    def _scale_thresholds(self, norms: torch.Tensor) -> None:
        """Architectures with per-latent thresholds rescale them with the latents."""

    def exported(self, scale_in: float = 1.0, scale_out: float = 1.0) -> Dictionary:
        """A copy acting on raw activations, with unit decoder rows."""
        out = type(self)(self.cfg)
        out.load_state_dict(self.state_dict())
        out.fold_scales(scale_in, scale_out)
        if not self.unit_norm_decoder:
            out.fold_decoder_norms()
        return out

    # --- files -------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write cfg.json and sae.safetensors (weights only) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = folder / (WEIGHTS_FILE + ".tmp")
        save_file(tensors, tmp, metadata={"format": "interp", "arch": self.arch})
        tmp.replace(folder / WEIGHTS_FILE)
        save_json(self.cfg, folder / CFG_FILE)
        return folder

    @staticmethod
    def load(folder: str | Path, device: str = "cpu") -> Dictionary:
        """Load any registered architecture saved by `save`; fails clearly on bad files.

        Other libraries' formats (SAELens, sparsify, Gemma Scope, ...) load with `interp.load_dictionary`."""
        folder = Path(folder)
        if not (folder / WEIGHTS_FILE).exists() and folder.is_dir() and any(folder.glob("*.safetensors")):
            raise FileNotFoundError(f"{folder} has no {WEIGHTS_FILE}: it is not a run folder written by interp. For other "
                                    "libraries' formats (SAELens, sparsify, ...) use interp.load_dictionary(folder).")
        cfg = read_config(folder / CFG_FILE)
        model = architecture(cfg.arch)(cfg)
        model.load_state_dict(read_weights(folder / WEIGHTS_FILE, model.state_dict()))
        return model.to(device)


def read_config(path: Path) -> DictionaryConfig:
    data = load_json(path)
    if "arch" not in data:
        raise ValueError(f"{path}: missing field 'arch'; not a dictionary config written by interp.")
    return from_dict(DictionaryConfig, data, source=str(path))


def read_weights(path: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Read a safetensors file and check its names, shapes and values against `expected`."""
    try:
        tensors = load_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found.") from None
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or foreign?): {err}") from None
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"{path}: tensor names do not match the config (missing {missing}, unexpected {extra}).")
    for name, ref in expected.items():
        if tensors[name].shape != ref.shape:
            raise ValueError(f"{path}: {name} has shape {tuple(tensors[name].shape)}, config implies {tuple(ref.shape)}.")
        if not torch.isfinite(tensors[name].float()).all():
            raise ValueError(f"{path}: {name} contains NaN or inf.")
    return {k: v.to(expected[k].dtype) for k, v in tensors.items()}

