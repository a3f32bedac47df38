import pytest
import torch

from helpers import random_dictionary
from interp.analysis.evals import evaluate
from interp.analysis.replacement_evals import evaluate_replacement, mlp_names, replacement_hooks
from interp.data.tokens import take_contexts, token_mask
from interp.hooks import splice_hooks
from interp.model import load_model
from transcoders.clt import CLTConfig, CrossLayerTranscoder

SPEC = "tiny:n_layers=3,d_model=32,n_heads=4,d_mlp=64,n_ctx=64"


@pytest.fixture(scope="module")
def model():
    return load_model(SPEC)


@pytest.fixture(scope="module")
def tokens(model):
    return take_contexts(model, "shakespeare", "validation", 32, 6)


def transcoders(model, skip=False, layers=None):
    out = {}
    for layer in layers or range(model.cfg.n_layers):
        name_in, name_out = mlp_names(layer)
        tc = random_dictionary("topk", d_in=32, d_dict=48, k=4, dtype="float32", seed=layer, hook_in=name_in,
                               hook_out=name_out, subtract_b_dec=False, skip=skip)
        with torch.no_grad():
            tc.W_dec.mul_(0.3)
        out[layer] = tc
    return out


def random_clt(model):
    clt = CrossLayerTranscoder(CLTConfig(n_layers=3, d_model=32, d_dict=48, k=4, model=SPEC))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return clt


@pytest.mark.parametrize("skip", [False, True])
def test_per_layer_replacement_equals_every_splice_at_once(model, tokens, skip):
    tcs = transcoders(model, skip=skip)
    mask = token_mask(model, tokens)
    ours = model.run_with_hooks(tokens, fwd_hooks=replacement_hooks(tcs, mask))
    reference = model.run_with_hooks(tokens, fwd_hooks=[h for tc in tcs.values() for h in splice_hooks(tc, mask)])
    torch.testing.assert_close(ours, reference)


def test_one_layer_matches_the_single_splice_evals(model, tokens):
    tcs = transcoders(model, layers=[1])
    metrics = evaluate_replacement(model, tcs, tokens)
    single, _ = evaluate(model, tcs[1], tokens)
    for ours, theirs in (("ce_loss_replaced", "ce_loss_spliced"), ("kl_replaced", "kl_spliced"), ("ce_recovered", "ce_recovered"),
                         ("ce_loss_clean", "ce_loss_clean"), ("ce_loss_zero_ablation", "ce_loss_zero_ablation")):
        assert metrics[ours] == pytest.approx(single[theirs], rel=1e-4, abs=1e-6), ours
    assert metrics["fvu_per_layer"][1] == pytest.approx(single["fvu"], rel=1e-4)


def test_clt_replacement_equals_a_fixed_point_of_its_own_forward(model, tokens):
    """Reference: feed the CLT (its dense forward on every layer's MLP inputs) the inputs of the previous pass,
    n_layers + 1 times; layer m's input depends only on outputs before m, so this converges exactly."""
    clt = random_clt(model)
    mask = token_mask(model, tokens)
    ours = model.run_with_hooks(tokens, fwd_hooks=replacement_hooks(clt.layer_transcoders(), mask))
    names = [mlp_names(l)[0] for l in range(3)]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    for _ in range(4):
        out = clt(torch.stack([cache[n] for n in names], 2).flatten(0, 1)).view(*tokens.shape, 3, -1)
        hooks = [(mlp_names(l)[1], lambda act, hook, l=l: torch.where(mask[..., None], out[:, :, l], act)) for l in range(3)]
        logits, cache = _cached(model, tokens, names, hooks)
    torch.testing.assert_close(ours, logits, rtol=1e-4, atol=1e-4)
    metrics = evaluate_replacement(model, clt.layer_transcoders(), tokens)
    assert metrics["kl_replaced"] > 0 and len(metrics["fvu_per_layer"]) == 3


def _cached(model, tokens, names, hooks):
    cache = {}
    capture = [(n, lambda act, hook: cache.__setitem__(hook.name, act)) for n in names]
    return model.run_with_hooks(tokens, fwd_hooks=hooks + capture), cache


def test_interp_eval_reports_the_replacement_model_of_a_set_and_of_a_clt(model, tmp_path, capsys):
    import json

    from interp.cli import main

    for layer, tc in transcoders(model).items():
        tc.cfg = tc.cfg.replace(model=SPEC)
        tc.save(tmp_path / "set" / f"layer_{layer}")
    random_clt(model).save(tmp_path / "clt")
    for name in ("set", "clt"):
        assert main(["eval", str(tmp_path / name), "--eval-contexts", "2", "--n-ctx", "32"]) == 0
        written = json.loads((tmp_path / name / "replacement_metrics.json").read_text())
        assert written["layers"] == [0, 1, 2] and written["ce_loss_replaced"] > written["ce_loss_clean"]
    assert "ce_recovered" in capsys.readouterr().out
