"""Equivalence with the source libraries' own code (slow: the first run installs them, minutes).

SAELens (`sae-lens`) and sparsify (`eai-sparsify`) are installed, with torch pinned to ours, into a cached
throwaway venv (INTERP_INTEROP_VENV, default ~/.cache/interp-interop/venv), never into the project, as
benchmarks/compare_libraries.py does. There, library_dump.py lets each library build, randomise and save a
dictionary of every architecture it has and dumps the library's own encode and forward on fixed inputs;
here load_dictionary reads the folders and must agree to 1e-5 (float32). The other way, folders that
save_saelens writes for every architecture are loaded by SAELens itself and must run the same.
"""

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from helpers import clear_codes, random_dictionary
from interp.io import load_dictionary, load_transcoder_set
from interp.circuits import attribute
from interp.circuits.neuronpedia import save_neuronpedia
from interp.io.circuit_tracer import save_circuit_tracer_set
from interp.io.saelens import load_saelens, save_saelens

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
PINS = ["torch==2.13.0", "sae-lens==6.54.12", "eai-sparsify==1.3.3"]  # the versions compared against
GRAPH_MODELS = "circuit-tracer==0.5.0"  # only its pydantic graph models are used: installed without its dependencies
SAELENS = {"standard": ("relu", False), "standard_uncentred": ("relu", False), "topk": ("topk", False),
           "topk_rescaled": ("topk", False), "jumprelu": ("jumprelu", False), "gated": ("jumprelu", False),
           "batchtopk": ("jumprelu", False), "transcoder": ("relu", False), "skip_transcoder": ("relu", True),
           "jumprelu_transcoder": ("jumprelu", False), "jumprelu_skip_transcoder": ("jumprelu", True)}
SPARSIFY = {"layers.1": ("blocks.1.hook_resid_post", False), "layers.1.mlp": ("blocks.1.hook_mlp_out", False),
            "layers.2.mlp": ("blocks.2.hook_mlp_out", True)}
TOL = 1e-5


def interop_python() -> Path:
    """The cached venv's python, created (torch first, then the libraries under a torch constraint) if needed."""
    env = Path(os.environ.get("INTERP_INTEROP_VENV") or Path.home() / ".cache" / "interp-interop" / "venv")
    py = env / "bin" / "python"
    if not py.exists():
        venv.create(env, with_pip=True)
    check = ("import sae_lens, sparsify, torch, circuit_tracer.frontend.graph_models; "
             "assert torch.__version__.startswith('2.13.0')")
    if subprocess.run([py, "-c", check], capture_output=True).returncode != 0:
        (env / "constraints.txt").write_text(PINS[0] + "\n")
        for args in ([PINS[0]], ["-c", env / "constraints.txt", *PINS[1:]], ["--no-deps", GRAPH_MODELS]):
            proc = subprocess.run([py, "-m", "pip", "install", "--quiet", *args], capture_output=True, text=True)
            assert proc.returncode == 0, f"pip install {args} failed:\n{proc.stderr[-3000:]}"
    return py


def run(py, *args, env=None):
    proc = subprocess.run([py, HERE / "library_dump.py", *map(str, args)], capture_output=True, text=True, timeout=1800,
                          env=None if env is None else {**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def py():
    return interop_python()


@pytest.fixture(scope="module")
def dumped(py, tmp_path_factory):
    out = tmp_path_factory.mktemp("libraries")
    run(py, "make", out)
    print("compared against", json.loads((out / "versions.json").read_text()))
    return out


def compare(d, dump, x):
    with torch.no_grad():
        codes, out = d.encode(x), d(x)
    assert (dump["codes"] != 0).float().mean() > 0.05, "the library's codes are (nearly) all zero: a vacuous test"
    # two libraries' code paths: the same latents fire wherever the selection has a margin (nearly everywhere),
    # and values and outputs agree to TOL on the rows where every selection has one
    clear = clear_codes(d, x, TOL)
    rows = clear.all(-1)
    assert rows.float().mean() > 0.9, f"only {int(rows.sum())} of {len(rows)} rows have a selection margin of {TOL}"
    assert torch.equal((codes != 0)[clear], (dump["codes"] != 0)[clear])
    assert (codes - dump["codes"])[rows].abs().max() < TOL and (out - dump["out"])[rows].abs().max() < TOL


@pytest.mark.parametrize("name", sorted(SAELENS))
def test_saelens_files_load_as_saelens_runs_them(name, dumped):
    x = load_file(dumped / "inputs.safetensors")["x"]
    d = load_dictionary(dumped / "saelens" / name)
    arch, skip = SAELENS[name]
    assert (d.arch, d.cfg.skip, d.cfg.dtype) == (arch, skip, "float32")
    transcoder = "transcoder" in name
    assert d.cfg.hook_out == ("blocks.1.hook_mlp_out" if transcoder else "blocks.1.hook_resid_post")
    assert d.d_out == (12 if transcoder else 16)
    compare(d, load_file(dumped / "saelens" / f"{name}.out.safetensors"), x)


@pytest.mark.parametrize("hookpoint", sorted(SPARSIFY))
def test_sparsify_files_load_as_sparsify_runs_them(hookpoint, dumped):
    x = load_file(dumped / "inputs.safetensors")["x"]
    d = load_dictionary(dumped / "sparsify" / hookpoint)
    hook_out, skip = SPARSIFY[hookpoint]
    assert (d.arch, d.cfg.hook_out, d.cfg.skip, d.cfg.subtract_b_dec) == ("topk", hook_out, skip, "mlp" not in hookpoint)
    compare(d, load_file(dumped / "sparsify" / f"{hookpoint}.out.safetensors"), x)


def test_sparsify_release_is_a_transcoder_set(dumped):
    assert sorted(load_transcoder_set(dumped / "sparsify")) == [1, 2]  # layers.1 is an SAE, not a transcoder


OURS = {"relu": {}, "topk": {}, "batchtopk": {}, "jumprelu": {},
        "relu_transcoder": {"arch": "relu", "d_out": 12}, "relu_skip_transcoder": {"arch": "relu", "d_out": 12, "skip": True},
        "jumprelu_transcoder": {"arch": "jumprelu", "d_out": 12},
        "jumprelu_skip_transcoder": {"arch": "jumprelu", "d_out": 12, "skip": True},
        "batchtopk_transcoder": {"arch": "batchtopk", "d_out": 12}}


def our_dictionary(name, seed):
    fields = dict(OURS[name])
    arch = fields.pop("arch", name)
    if "d_out" in fields:
        fields.update(subtract_b_dec=False, hook_out="blocks.1.hook_mlp_out")
    d = random_dictionary(arch, d_in=16, d_dict=48, seed=seed, dtype="float32", hook_in="blocks.1.hook_resid_post",
                          model="tiny", **fields)
    with torch.no_grad():
        if arch == "jumprelu":
            d.log_threshold.copy_(torch.rand(48, generator=torch.Generator().manual_seed(seed)).mul(0.5).log())
        if arch == "batchtopk":
            d.threshold.fill_(0.4)
    return d


def test_saelens_runs_what_we_write_and_we_read_it_back_exactly(py, tmp_path):
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(3)) * 2
    save_file({"x": x}, tmp_path / "inputs.safetensors")
    ours = {name: our_dictionary(name, i) for i, name in enumerate(OURS)}
    for name, d in ours.items():
        save_saelens(d, tmp_path / name)
    run(py, "read", *[tmp_path / name for name in ours])
    for name, d in ours.items():
        compare(d, load_file(tmp_path / f"{name}.out.safetensors"), x)  # SAELens's forward on our files
        back = load_saelens(tmp_path / name)
        assert back.cfg == d.cfg
        with torch.no_grad():
            assert torch.equal(back.encode(x), d.encode(x)) and torch.equal(back(x), d(x))


def test_circuit_tracer_parses_our_graph_json_unchanged(py, tiny, tmp_path):
    """circuit-tracer's own pydantic Model (frontend/graph_models.py) reads our graph and writes back the same JSON."""
    tcs = {layer: random_dictionary("relu", d_in=32, d_dict=24, dtype="float32", seed=layer, subtract_b_dec=False,
                                    hook_in=f"blocks.{layer}.ln2.hook_normalized", hook_out=f"blocks.{layer}.hook_mlp_out")
           for layer in range(2)}
    graph = attribute(tiny, tcs, "a cat\n", max_feature_nodes=10_000, progress=False)
    path = save_neuronpedia(graph, tmp_path / "g.json", transcoder_list=["tiny/0", "tiny/1"])
    run(py, "graph", path)
    ours, theirs = json.loads(path.read_text()), json.loads(path.with_suffix(".circuit_tracer.json").read_text())
    assert theirs == ours and len(ours["links"]) > 0


# release -> (SAE-Lens sae_id, its norm_scaling_factor in sae_lens/pretrained_saes.yaml, kind, layer)
LLAMA_SCOPE = {"llama_scope_lxr_8x": ("l15r_8x", 5.91907514450867, "R", 15),
               "llama_scope_lxm_8x": ("l3m_8x", 35.46320346320346, "M", 3)}


def test_llama_scope_folders_load_as_saelens_converts_them(py, tmp_path, monkeypatch):
    """Both libraries read the same folders from one hub cache laid out as huggingface_hub lays it out, offline.
    The fixture's dataset norm is the one SAE-Lens's registry folds (sqrt(d_model) / norm_scaling_factor; library_dump
    checks it), its threshold gates at 0.3 after the fold; one release has unit decoder norms, one has not."""
    from test_hub import cached_repo
    from test_llama_scope import D, inputs, llama_folder

    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for release, (sae_id, factor, kind, layer) in LLAMA_SCOPE.items():
        repo, folder = f"fnlp/Llama3_1-8B-Base-LX{kind}-8x", f"Llama3_1-8B-Base-L{layer}{kind}-8x"
        norm = D**0.5 / factor
        llama_folder(cached_repo(tmp_path / "hub", repo) / folder, layer=layer, kind=kind, norms=(norm, norm),
                     threshold=0.3 / factor, unit_decoder=kind == "R")
        x = inputs(norm)
        save_file({"x": x}, tmp_path / "llama_inputs.safetensors")
        run(py, "llama_scope", tmp_path, f"{release}:{sae_id}", env=env)
        d = load_dictionary(repo, folder)
        hook = f"blocks.{layer}.{'hook_resid_post' if kind == 'R' else 'hook_mlp_out'}"
        assert (d.arch, d.cfg.hook_in, d.cfg.hook_out, d.cfg.model) == ("jumprelu", hook, hook, "meta-llama/Llama-3.1-8B")
        compare(d, load_file(tmp_path / f"{release}.out.safetensors"), x)


def test_circuit_tracer_sets_and_clts_load_as_circuit_tracer_runs_them(py, tmp_path):
    """circuit-tracer 0.5.0 saves a transcoder set (ReLU + skip, JumpReLU) and a JumpReLU CLT with its own classes;
    interp.io.load_transcoder_set and transcoders.load_clt read them and run as circuit-tracer's loaders do."""
    from transcoders import load_clt

    run(py, "circuit_tracer", tmp_path)
    inputs = load_file(tmp_path / "inputs.safetensors")
    tcs = load_transcoder_set(tmp_path / "set", n_layers=2)
    assert [(tc.arch, tc.cfg.skip, tc.cfg.model) for tc in tcs.values()] == [("relu", True, "tiny"), ("jumprelu", False, "tiny")]
    for layer, tc in tcs.items():
        compare(tc, load_file(tmp_path / f"set.layer{layer}.out.safetensors"), inputs["x"])
    clt, dump = load_clt(tmp_path / "clt"), load_file(tmp_path / "clt.out.safetensors")
    assert (clt.cfg.n_layers, clt.cfg.arch, clt.cfg.hooks(2)) == (3, "jumprelu", ("blocks.2.ln2.hook_normalized", "blocks.2.hook_mlp_out"))
    compare_clt(clt, dump, inputs["x3"])


def compare_clt(clt, dump, x3):
    """As `compare`, for a CLT on x3 [n, L, d_model]: the same gates wherever the pre-activations have a margin."""
    with torch.no_grad():
        codes, out = clt.encode(x3), clt(x3)
    assert 0.05 < (dump["codes"] != 0).float().mean() < 0.95
    clear = torch.stack([clear_codes(tc, x3[:, l], TOL) for l, tc in clt.layer_transcoders().items()], 1)
    rows = clear.flatten(1).all(-1)
    assert rows.float().mean() > 0.9, f"only {int(rows.sum())} of {len(rows)} rows have a selection margin of {TOL}"
    assert torch.equal((codes != 0)[clear], (dump["codes"] != 0)[clear])
    assert (codes - dump["codes"])[rows].abs().max() < TOL
    # outputs sum up to 3 x 48 decoder rows (|out| up to ~40): equal to float32 rounding of that scale
    assert (out - dump["out"])[rows].abs().max() < TOL * dump["out"].abs().max()


def test_circuit_tracer_runs_the_sets_we_write(py, tmp_path):
    """save_circuit_tracer_set's files (ReLU + skip, JumpReLU), loaded by circuit-tracer 0.5.0's load_transcoder_set."""
    tcs = {layer: random_dictionary(arch, d_in=16, d_dict=48, seed=layer, dtype="float32", subtract_b_dec=False,
                                    skip=arch == "relu", hook_in=f"blocks.{layer}.ln2.hook_normalized",
                                    hook_out=f"blocks.{layer}.hook_mlp_out") for layer, arch in enumerate(("relu", "jumprelu"))}
    with torch.no_grad():
        tcs[1].log_threshold.copy_(torch.rand(48, generator=torch.Generator().manual_seed(1)).mul(0.5).log())
    save_circuit_tracer_set(tcs, tmp_path / "set")
    x = torch.randn(256, 16, generator=torch.Generator().manual_seed(5)) * 2
    save_file({"x": x}, tmp_path / "inputs.safetensors")
    run(py, "circuit_tracer_read", tmp_path / "set")
    for layer, tc in tcs.items():
        compare(tc, load_file(tmp_path / f"set.layer{layer}.out.safetensors"), x)


def test_circuit_tracer_runs_the_clts_we_write(py, tmp_path):
    """CrossLayerTranscoder.save's files (JumpReLU), loaded by circuit-tracer 0.5.0's load_clt (it ignores clt.json)."""
    from transcoders.clt import CLTConfig, CrossLayerTranscoder

    clt = CrossLayerTranscoder(CLTConfig(n_layers=3, d_model=16, d_dict=48, arch="jumprelu"))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        clt.log_threshold.copy_(torch.rand(3, 48, generator=g).mul(0.5).log())
    clt.save(tmp_path / "clt")
    x3 = torch.randn(256, 3, 16, generator=torch.Generator().manual_seed(5)) * 2
    save_file({"x3": x3}, tmp_path / "inputs.safetensors")
    run(py, "circuit_tracer_read_clt", tmp_path / "clt")
    compare_clt(clt, load_file(tmp_path / "clt.out.safetensors"), x3)
