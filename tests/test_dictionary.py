import json

import pytest
import torch

from helpers import random_dictionary
from interp.dictionary import Dictionary, DictionaryConfig, architecture
from saes.jumprelu import JumpReLUFunction, StepFunction

ARCHS = ["relu", "topk", "batchtopk", "jumprelu"]


def identity_dictionary(arch: str, d: int = 6) -> Dictionary:
    """Latents +e_i and -e_i: relu(x) - relu(-x) = x, so the reconstruction is exact."""
    fields = {"k": d} if arch in ("topk", "batchtopk") else {}
    dic = random_dictionary(arch, d_in=d, d_dict=2 * d, **fields)
    eye = torch.eye(d, dtype=torch.float64)
    with torch.no_grad():
        dic.W_enc.copy_(torch.cat([eye, -eye], 1))
        dic.W_dec.copy_(torch.cat([eye, -eye], 0))
        dic.b_enc.zero_()
        dic.b_dec.zero_()
        if arch == "jumprelu":
            dic.log_threshold.fill_(-30.0)
    return dic


@pytest.mark.parametrize("arch", ARCHS)
def test_identity_dictionary_reconstructs_exactly(arch):
    dic = identity_dictionary(arch)
    x = torch.randn(50, 6, dtype=torch.float64)
    assert torch.allclose(dic(x), x, atol=1e-12)
    assert torch.allclose(dic.training_forward(x).recon, x, atol=1e-12)


def test_topk_keeps_exactly_k():
    dic = random_dictionary("topk", d_in=8, d_dict=32, k=5)
    with torch.no_grad():
        dic.b_enc.fill_(100.0)  # every pre-activation positive, so ReLU removes none
    codes = dic.encode(torch.randn(40, 8, dtype=torch.float64))
    assert ((codes != 0).sum(-1) == 5).all()
    pre = dic.pre_acts(torch.randn(40, 8, dtype=torch.float64))
    codes = dic.activation(pre)
    kept = codes != 0
    assert (kept.sum(-1) <= 5).all()
    # every kept value beats every dropped positive value in its row
    assert (torch.where(kept, pre, torch.inf).min(-1).values >= torch.where(kept, -torch.inf, pre).max(-1).values).all()


def test_batchtopk_keeps_k_times_batch_and_learns_threshold():
    dic = random_dictionary("batchtopk", d_in=8, d_dict=32, k=3)
    with torch.no_grad():
        dic.b_enc.fill_(100.0)
    x = torch.randn(20, 8, dtype=torch.float64)
    step = dic.training_forward(x)
    pre, codes = step.pre, step.codes
    assert int((codes != 0).sum()) == 3 * 20
    assert dic.threshold.item() == pytest.approx(codes[codes != 0].min().item())
    inference = dic.encode(x)
    assert torch.equal(inference != 0, pre > dic.threshold)


def test_jumprelu_straight_through_gradients():
    eps, theta = 0.1, torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    # columns: latent 0 has z inside its window (|z - theta| < eps/2) once, latent 1 twice
    pre = torch.tensor([[1.03, 2.01], [0.5, 1.96], [3.0, 5.0]], dtype=torch.float64, requires_grad=True)
    out = JumpReLUFunction.apply(pre, theta, eps)
    assert torch.equal(out, torch.tensor([[1.03, 2.01], [0.0, 0.0], [3.0, 5.0]], dtype=torch.float64))
    out.sum().backward()
    assert torch.allclose(theta.grad, torch.tensor([-1.0 / eps * 1, -2.0 / eps * 2], dtype=torch.float64))
    assert torch.equal(pre.grad, (pre > theta).double())
    theta.grad = None
    StepFunction.apply(pre, theta, eps).sum().backward()
    assert torch.allclose(theta.grad, torch.tensor([-1 / eps, -2 / eps], dtype=torch.float64))


def test_jumprelu_step_gradient_is_derivative_of_its_ramp():
    """The rectangle-kernel pseudo-derivative is the exact derivative of a ramp of width eps."""
    eps = 0.2
    z = torch.linspace(0.0, 2.0, 101, dtype=torch.float64)[:, None]
    theta = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    StepFunction.apply(z, theta, eps).sum().backward()

    def ramp(t):
        return ((z - t) / eps + 0.5).clamp(0, 1).sum()

    h = 1e-6
    numeric = (ramp(1.0 + h) - ramp(1.0 - h)) / (2 * h)
    assert theta.grad.item() == pytest.approx(numeric.item(), rel=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(arch, tmp_path):
    dic = random_dictionary(arch)
    dic.save(tmp_path)
    back = Dictionary.load(tmp_path)
    assert type(back) is type(dic) and back.cfg == dic.cfg
    x = torch.randn(10, 8, dtype=torch.float64)
    assert torch.equal(back(x), dic(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_export_folds_scales_and_norms_exactly(arch):
    dic = random_dictionary(arch)
    with torch.no_grad():
        dic.W_dec.mul_(torch.rand(16, 1, dtype=torch.float64) + 0.5)  # non-unit rows
    s_in, s_out = 3.0, 3.0
    x = torch.randn(30, 8, dtype=torch.float64)
    exported = dic.exported(s_in, s_out)
    assert torch.allclose(exported(x), dic(x * s_in) / s_out, atol=1e-10)
    if not dic.unit_norm_decoder:
        assert torch.allclose(exported.W_dec.norm(dim=1), torch.ones(16, dtype=torch.float64))


def test_bad_files_fail_clearly(tmp_path):
    dic = random_dictionary("topk")
    dic.save(tmp_path)
    weights = tmp_path / "sae.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or foreign"):
        Dictionary.load(tmp_path)
    weights.write_bytes(b"\x80\x04pickle-ish")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        Dictionary.load(tmp_path)

    dic.save(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    for broken, message in (({k: v for k, v in cfg.items() if k != "d_in"}, "missing required field"),
                            ({**cfg, "k": "32"}, "field 'k' should be"),
                            ({**cfg, "colour": 1}, "unknown field"),
                            ({**cfg, "arch": "nope"}, "Unknown architecture"),
                            ({**cfg, "d_dict": 17}, "shape")):
        (tmp_path / "cfg.json").write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=message):
            Dictionary.load(tmp_path)


def test_architecture_validation():
    with pytest.raises(ValueError, match="k <= d_dict"):
        architecture("topk")(DictionaryConfig(arch="topk", d_in=4, d_dict=8, k=9))
    with pytest.raises(ValueError, match="l1_coeff"):
        architecture("relu")(DictionaryConfig(arch="relu", d_in=4, d_dict=8, l1_coeff=0.0))


def test_each_architecture_fills_its_own_defaults():
    """Knobs left as None take the architecture's defaults; knobs it does not use are recorded as off."""
    topk = architecture("topk")(DictionaryConfig(arch="topk", d_in=32)).cfg
    assert (topk.d_dict, topk.k, topk.aux_k, topk.l1_coeff, topk.beta) == (256, 32, 16, 0.0, 0.0)
    relu = architecture("relu")(DictionaryConfig(arch="relu", d_in=32)).cfg
    assert (relu.l1_coeff, relu.k, relu.aux_k) == (5.0, 0, 0)
    gsae = architecture("gsae")(DictionaryConfig(arch="gsae", d_in=32, beta=0.0)).cfg
    assert (gsae.k, gsae.beta, gsae.aux_k) == (32, 0.0, 16)  # an explicit 0 is kept
    assert architecture("jumprelu")(DictionaryConfig(arch="jumprelu", d_in=32)).cfg.l0_coeff == 0.01
    assert architecture("batchtopk").sweep_fields == ("d_dict", "k") and "beta" in architecture("gsae").sweep_fields


def test_registering_a_taken_name_fails_but_the_same_class_may_register_again():
    from interp.dictionary import register

    topk = architecture("topk")
    with pytest.raises(ValueError, match="already registered to saes.topk.TopKSAE"):
        register("topk")(type("TopKSAE", (topk,), {}))  # another class (qualified name test_dictionary.TopKSAE)
    assert architecture("topk") is topk
    again = type(topk.__name__, (topk,), {"__module__": topk.__module__, "__qualname__": topk.__qualname__})
    try:
        assert register("topk")(again) is again and architecture("topk") is again  # e.g. importlib.reload(saes.topk)
    finally:
        register("topk")(topk)


def test_a_config_naming_another_architecture_fails():
    with pytest.raises(ValueError, match="registered as 'topk'"):
        architecture("topk")(DictionaryConfig(arch="relu", d_in=4, d_dict=8))


def test_every_builtin_architecture_loads_in_a_process_that_imports_only_interp(tmp_path):
    """The entry points in pyproject.toml (pip install -e . puts them in the metadata) make saes optional to import."""
    import importlib.metadata
    import subprocess
    import sys

    names = sorted(ep.name for ep in importlib.metadata.entry_points(group="interp.dictionaries"))
    assert {"relu", "topk", "batchtopk", "jumprelu", "gsae"} <= set(names)
    x = torch.randn(5, 8, dtype=torch.float64)
    for name in names:
        dic = random_dictionary(name)
        dic.save(tmp_path / name)
        torch.save(dic(x), tmp_path / name / "expected.pt")
    torch.save(x, tmp_path / "x.pt")
    script = (f"import sys, torch, interp\nx = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)\n"
              f"for name in {names!r}:\n"
              f"    d = interp.Dictionary.load({str(tmp_path)!r} + '/' + name)\n"
              f"    want = torch.load({str(tmp_path)!r} + '/' + name + '/expected.pt', weights_only=True)\n"
              "    assert d.arch == name and torch.equal(d(x), want), name\n"
              "print('ok', sorted(m for m in sys.modules if m.startswith('saes.')))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
