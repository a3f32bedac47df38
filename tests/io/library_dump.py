"""Runs inside the throwaway venv of test_interop.py (sae-lens and eai-sparsify installed, not interp).

    python library_dump.py make OUT      each library builds and saves a random dictionary of every
                                         architecture it has under OUT/<library>/<name>/, and dumps its own
                                         encode/decode of OUT/inputs.safetensors to OUT/<library>/<name>.out.safetensors
    python library_dump.py read DIR...   SAELens loads each folder (written by interp) and dumps its outputs beside it
    python library_dump.py graph JSON... circuit-tracer's pydantic graph Model parses each file and writes its own
                                         serialisation to JSON.circuit_tracer.json
    python library_dump.py circuit_tracer OUT
                                         circuit-tracer 0.5.0 builds, randomises and saves a 2-layer transcoder set
                                         (OUT/set: config.yaml + layer_<L>.safetensors; ReLU with skip, JumpReLU) and a
                                         3-layer JumpReLU CLT (OUT/clt), reloads them with its own loaders and dumps
                                         OUT/set.layer<L>.out.safetensors, OUT/clt.out.safetensors on OUT/inputs.safetensors
    python library_dump.py circuit_tracer_read DIR
                                         circuit-tracer loads the set interp wrote in DIR; dumps DIR.layer<L>.out.safetensors
    python library_dump.py circuit_tracer_read_clt DIR
                                         circuit-tracer's load_clt reads the CLT interp wrote in DIR; dumps DIR.out.safetensors
    python library_dump.py llama_scope OUT RELEASE:SAE_ID...
                                         SAE.from_pretrained loads each Llama Scope release from the hub cache the
                                         caller laid out (HF_HUB_CACHE, HF_HUB_OFFLINE=1) with SAE-Lens's own converter
                                         and dumps its outputs on OUT/llama_inputs.safetensors to OUT/RELEASE.out.safetensors

Dumps hold "codes" [n, d_sae] (the library's encode) and "out" [n, d_out] (its full forward, skip path included).
"""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")  # its Triton decoder needs CUDA
D_IN, D_SAE, D_OUT, K = 16, 48, 12, 5
HOOK, HOOK_OUT = "blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"
TRANSCODER_HOOKS = ("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out")


def randomise(module, seed):
    """Every parameter and float buffer random (biases and thresholds non-zero, decoder norms not 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in [*module.named_parameters(), *module.named_buffers()]:
            if p.dtype.is_floating_point:
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if "threshold" in name else 0.5))
                if "threshold" in name:
                    p.abs_()


def dump(path, codes, out):
    save_file({"codes": codes.detach().float().contiguous(), "out": out.detach().float().contiguous()}, path)


# --- SAELens -------------------------------------------------------------------------------------------------
def saelens_models():
    import sae_lens as sl

    meta = lambda hook_out=None, hooks=(HOOK, HOOK): {"metadata": sl.saes.sae.SAEMetadata(  # noqa: E731
        hook_name=hooks[0], model_name="tiny", **({"hook_name_out": hooks[1]} if hook_out else {}))}
    tc = {"d_in": D_IN, "d_sae": D_SAE, "d_out": D_OUT, "apply_b_dec_to_input": False}
    yield "standard", sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, **meta()))
    yield "standard_uncentred", sl.StandardSAE(sl.StandardSAEConfig(d_in=D_IN, d_sae=D_SAE, apply_b_dec_to_input=False, **meta()))
    yield "topk", sl.TopKSAE(sl.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, **meta()))
    yield "topk_rescaled", sl.TopKSAE(sl.TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, rescale_acts_by_decoder_norm=True, **meta()))
    yield "jumprelu", sl.JumpReLUSAE(sl.JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE, **meta()))
    yield "gated", sl.GatedSAE(sl.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE, **meta()))
    yield "batchtopk", sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(d_in=D_IN, d_sae=D_SAE, k=K, **meta()))
    yield "transcoder", sl.Transcoder(sl.TranscoderConfig(**tc, **meta(True, TRANSCODER_HOOKS)))
    yield "skip_transcoder", sl.SkipTranscoder(sl.SkipTranscoderConfig(**tc, **meta(True, TRANSCODER_HOOKS)))
    yield "jumprelu_transcoder", sl.JumpReLUTranscoder(sl.JumpReLUTranscoderConfig(**tc, **meta(True, TRANSCODER_HOOKS)))
    yield "jumprelu_skip_transcoder", sl.JumpReLUSkipTranscoder(sl.JumpReLUSkipTranscoderConfig(**tc, **meta(True, TRANSCODER_HOOKS)))


def saelens_outputs(sae, x):
    with torch.no_grad():
        codes = sae.encode(x)
        return codes, sae(x)


def make_saelens(root, x):
    from sae_lens import SAE

    for i, (name, sae) in enumerate(saelens_models()):
        randomise(sae, seed=i)
        folder = root / name
        if name == "batchtopk":  # a training SAE: saved for inference (as jumprelu) the way SAELens's trainer does
            sae.topk_threshold.fill_(0.4)
            sae.save_inference_model(folder)
        else:
            sae.save_model(folder)
        loaded = SAE.load_from_disk(folder)  # the library's forward on the library's own files
        dump(root / f"{name}.out.safetensors", *saelens_outputs(loaded.eval(), x))


def read_saelens(folders):
    from sae_lens import SAE

    for folder in map(Path, folders):
        x = load_file(folder.parent / "inputs.safetensors")["x"]
        sae = SAE.load_from_disk(folder).eval()
        dump(folder.parent / f"{folder.name}.out.safetensors", *saelens_outputs(sae, x[:, : sae.cfg.d_in]))


# --- circuit-tracer 0.5.0 -------------------------------------------------------------------------------------
CT_HOOKS = "feature_input_hook: ln2.hook_normalized\nfeature_output_hook: hook_mlp_out\n"


def make_circuit_tracer(out, x, x3):
    import torch.nn.functional as F
    from circuit_tracer.transcoder.activation_functions import JumpReLU
    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder
    from circuit_tracer.transcoder.single_layer_transcoder import SingleLayerTranscoder

    cpu = torch.device("cpu")
    (out / "set").mkdir(parents=True)
    for layer, (act, skip) in enumerate(((F.relu, True), (JumpReLU(torch.zeros(D_SAE), 0.1), False))):
        tc = SingleLayerTranscoder(D_IN, D_SAE, act, layer, skip_connection=skip, device=cpu, dtype=torch.float32)
        randomise(tc, seed=200 + layer)
        tc.to_safetensors(str(out / "set" / f"layer_{layer}.safetensors"))
    (out / "set" / "config.yaml").write_text("model_kind: transcoder_set\nmodel_name: tiny\n" + CT_HOOKS)
    read_circuit_tracer(out / "set", x)
    clt = CrossLayerTranscoder(3, D_SAE, D_IN, activation_function="jump_relu", lazy_decoder=False, device=cpu,
                               dtype=torch.float32)
    randomise(clt, seed=300)
    clt.to_safetensors(str(out / "clt"))
    (out / "clt" / "config.yaml").write_text("model_kind: cross_layer_transcoder\nmodel_name: tiny\n" + CT_HOOKS)
    read_circuit_tracer_clt(out / "clt", x3)


def read_circuit_tracer_clt(folder, x3):
    """circuit-tracer's own load_clt on `folder`; encode and forward of x3 [batch, n_layers, d_model]."""
    from circuit_tracer.transcoder.cross_layer_transcoder import load_clt

    clt = load_clt(str(folder), "ln2.hook_normalized", "hook_mlp_out", device=torch.device("cpu"), dtype=torch.float32,
                   lazy_decoder=False)
    with torch.no_grad():  # circuit-tracer's CLT takes and returns [n_layers, batch, ...]
        dump(Path(f"{folder}.out.safetensors"), clt.encode(x3.transpose(0, 1)).transpose(0, 1), clt(x3.transpose(0, 1)).transpose(0, 1))


def read_circuit_tracer(folder, x):
    """circuit-tracer's own load_transcoder_set on the layer files of `folder`; each layer's encode and forward."""
    from circuit_tracer.transcoder.single_layer_transcoder import load_transcoder_set

    paths = {int(p.stem.split("_")[1]): str(p) for p in Path(folder).glob("layer_*.safetensors")}
    tset = load_transcoder_set(paths, scan="test", feature_input_hook="ln2.hook_normalized",
                               feature_output_hook="hook_mlp_out", device=torch.device("cpu"), dtype=torch.float32,
                               lazy_encoder=False, lazy_decoder=False)
    for layer, tc in enumerate(tset):
        with torch.no_grad():
            dump(Path(f"{folder}.layer{layer}.out.safetensors"), tc.encode(x), tc(x))


# --- Llama Scope (SAE-Lens's converter) ---------------------------------------------------------------------
def read_llama_scope(out, pairs):
    import math

    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_norm_scaling_factor, get_repo_id_and_folder_name

    assert os.environ.get("HF_HUB_OFFLINE") == "1", "the Llama Scope fixtures must come from the local cache only"
    x = load_file(out / "llama_inputs.safetensors")["x"]
    for release, sae_id in (pair.split(":") for pair in pairs):
        repo_id, folder = get_repo_id_and_folder_name(release, sae_id)
        snapshots = Path(os.environ["HF_HUB_CACHE"], f"models--{repo_id.replace('/', '--')}", "snapshots")
        hyper = json.loads(next(snapshots.glob(f"*/{folder}/hyperparams.json")).read_text())
        factor = math.sqrt(hyper["d_model"]) / hyper["dataset_average_activation_norm"]["in"]
        registry = get_norm_scaling_factor(release, sae_id)
        assert abs(factor / registry - 1) < 1e-9, f"fixture norm gives {factor}, SAE-Lens's registry folds {registry}"
        sae = SAE.from_pretrained(release, sae_id, device="cpu", dtype="float32").eval()
        dump(out / f"{release}.out.safetensors", *saelens_outputs(sae, x))


# --- sparsify ------------------------------------------------------------------------------------------------
def make_sparsify(root, x):
    from sparsify import SparseCoder, SparseCoderConfig

    cases = {"layers.1": {}, "layers.1.mlp": {"transcode": True}, "layers.2.mlp": {"transcode": True, "skip_connection": True}}
    for i, (hookpoint, extra) in enumerate(cases.items()):
        coder = SparseCoder(D_IN, SparseCoderConfig(num_latents=D_SAE, k=K, **extra))
        randomise(coder, seed=100 + i)
        coder.save_to_disk(root / hookpoint)
        loaded = SparseCoder.load_from_disk(root / hookpoint)
        with torch.no_grad():
            acts, indices, _ = loaded.encode(x)
            codes = torch.zeros(len(x), D_SAE).scatter_(-1, indices, acts)
            out = loaded(x).sae_out  # decode + skip path
        dump(root / f"{hookpoint}.out.safetensors", codes, out)


def main():
    mode, rest = sys.argv[1], sys.argv[2:]
    torch.manual_seed(0)
    if mode == "read":
        read_saelens(rest)
        return
    if mode == "circuit_tracer_read":
        read_circuit_tracer(Path(rest[0]), load_file(Path(rest[0]).parent / "inputs.safetensors")["x"])
        return
    if mode == "circuit_tracer_read_clt":
        read_circuit_tracer_clt(Path(rest[0]), load_file(Path(rest[0]).parent / "inputs.safetensors")["x3"])
        return
    if mode == "circuit_tracer":
        out = Path(rest[0])
        inputs = {"x": torch.randn(256, D_IN, generator=torch.Generator().manual_seed(8)) * 2,
                  "x3": torch.randn(256, 3, D_IN, generator=torch.Generator().manual_seed(9)) * 2}
        save_file(inputs, out / "inputs.safetensors")
        make_circuit_tracer(out, inputs["x"], inputs["x3"])
        return
    if mode == "llama_scope":
        read_llama_scope(Path(rest[0]), rest[1:])
        return
    if mode == "graph":
        from circuit_tracer.frontend.graph_models import Model

        for path in map(Path, rest):
            model = Model.model_validate_json(path.read_text())
            path.with_suffix(".circuit_tracer.json").write_text(model.model_dump_json())
        return
    out = Path(rest[0])
    x = torch.randn(256, D_IN, generator=torch.Generator().manual_seed(7)) * 2
    for lib, make in (("saelens", make_saelens), ("sparsify", make_sparsify)):
        (out / lib).mkdir(parents=True, exist_ok=True)
        make(out / lib, x)
    save_file({"x": x}, out / "inputs.safetensors")
    import importlib.metadata as md

    (out / "versions.json").write_text(json.dumps({p: md.version(p) for p in ("sae-lens", "eai-sparsify", "circuit-tracer", "torch")}))


if __name__ == "__main__":
    main()
