import itertools

import pytest
import torch

from helpers import random_dictionary
from interp.circuits import LocalReplacement, Target
from interp.interventions import Intervention, run_with_interventions
from interp.model import BYTE_VOCAB

PROMPT = torch.tensor([BYTE_VOCAB - 1, *b"abcdef"])


def transcoders(model, skip=False):
    out = {}
    for layer in range(model.cfg.n_layers):
        tc = random_dictionary("topk", d_in=32, d_dict=48, k=4, dtype="float32", seed=layer, subtract_b_dec=False,
                               skip=skip, hook_in=f"blocks.{layer}.ln2.hook_normalized",
                               hook_out=f"blocks.{layer}.hook_mlp_out")
        with torch.no_grad():
            tc.W_dec.mul_(0.3)
        out[layer] = tc
    return out


@pytest.fixture(scope="module")
def rep(tiny):
    return LocalReplacement(tiny, transcoders(tiny), PROMPT)


def demeaned(logits):
    return logits - logits.mean(-1, keepdim=True)


@pytest.mark.parametrize("attention, downstream", list(itertools.product(["frozen", "recomputed"], ["free", "held"])))
def test_no_intervention_gives_the_models_logits(rep, tiny, attention, downstream):
    logits = rep.intervene([], attention, downstream)
    assert (logits[0] - tiny(PROMPT[None])[0]).abs().max() < 1e-4


def test_frozen_held_ablation_moves_a_logit_by_exactly_the_graph_edge(rep):
    """The graph's linear prediction: a feature's edge to a logit is its ablation effect in the frozen model."""
    check_edges_are_ablation_effects(rep)


def check_edges_are_ablation_effects(rep):
    active = rep.active_features()
    last, n_layers = len(PROMPT) - 1, rep.n_layers
    tokens = rep.logits[last].topk(3).indices.tolist()
    targets = [Target("logit", n_layers, last, t) for t in tokens]
    chosen = [i for i in range(len(active)) if active[i, 1] in (2, last)][:6]
    edges = rep.edges(targets, active)[:, chosen]  # [targets, features]
    rows = [[Intervention.ablate(rep.transcoders[int(active[i, 0])], int(active[i, 2]), where=int(active[i, 1]))]
            for i in chosen]
    logits = demeaned(rep.intervene(rows, "frozen", "held")[:, last])  # one batch: one row per feature
    measured = logits[:, tokens] - demeaned(rep.logits[last])[tokens]
    assert torch.allclose(measured, -edges.T, atol=1e-4)
    assert edges.abs().max() > 1e-2


def cross_layer(model):
    """Per-layer views of a cross-layer transcoder: layer 0's features also write into layer 1's MLP output."""
    tcs = transcoders(model)
    tcs[0].W_dec_cross = torch.randn(48, 1, 32, generator=torch.Generator().manual_seed(5)) * 0.3
    tcs[1].W_dec_cross = torch.zeros(48, 0, 32)
    return tcs


def test_cross_layer_transcoders_in_the_replacement_and_the_real_model(tiny):
    tcs = cross_layer(tiny)
    rep = LocalReplacement(tiny, tcs, PROMPT)
    for attention, downstream in itertools.product(["frozen", "recomputed"], ["free", "held"]):
        assert (rep.intervene([], attention, downstream)[0] - rep.logits).abs().max() < 1e-4
    check_edges_are_ablation_effects(rep)

    pos = 3
    latent = int(rep.codes[0][pos].nonzero()[0, 0])
    code = rep.codes[0][pos, latent]

    def remove(W):  # the feature's write, removed by hand
        def hook(act, hook):
            act = act.clone()
            act[:, pos] -= code * W
            return act
        return hook

    expected = tiny.run_with_hooks(PROMPT[None], fwd_hooks=[("blocks.0.hook_mlp_out", remove(tcs[0].W_dec[latent])),
                                                             ("blocks.1.hook_mlp_out", remove(tcs[0].W_dec_cross[latent, 0]))])
    logits, _ = run_with_interventions(tiny, PROMPT, Intervention.ablate(tcs[0], latent, where=pos))
    assert torch.allclose(logits, expected, atol=1e-5)
    with pytest.raises(ValueError, match="keep_error=True"):
        run_with_interventions(tiny, PROMPT, Intervention.ablate(tcs[0], latent), keep_error=False)


def test_rows_of_a_batch_are_independent_and_modes_differ(rep):
    active = rep.active_features()
    layer, pos, latent = active[(active[:, 0] == 0) & (active[:, 1] == 3)][0].tolist()
    iv = Intervention.clamp(rep.transcoders[layer], latent, 5.0, where=pos)
    batch = rep.intervene([[iv], []], "recomputed", "free")
    alone = rep.intervene([iv], "recomputed", "free")
    assert torch.allclose(batch[:1], alone, atol=1e-5) and torch.allclose(batch[1], rep.logits, atol=1e-4)
    results = [rep.intervene([iv], a, d) for a, d in itertools.product(["frozen", "recomputed"], ["free", "held"])]
    assert all((a - b).abs().max() > 1e-5 for a, b in itertools.combinations(results, 2))


def test_interventions_must_use_the_replacements_transcoders(rep):
    other = transcoders(rep.model)[0]
    with pytest.raises(ValueError, match="not one of this replacement's transcoders"):
        rep.intervene([Intervention.ablate(other, 1)])
    with pytest.raises(ValueError, match="attention must be one of"):
        rep.intervene([], "partly")


MODES = list(itertools.product(["frozen", "recomputed"], ["free", "held"]))


def clt_views(model, cross_scale: float):
    """A real cross-layer transcoder (transcoders.clt) built from `transcoders(model)`, its cross-layer decoders
    random * cross_scale, as the per-layer views interp.circuits works with."""
    from transcoders.clt import CrossLayerTranscoder

    clt = CrossLayerTranscoder.from_transcoders(transcoders(model))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for W in clt.W_dec[:-1]:
            W[:, 1:] = torch.randn(W[:, 1:].shape, generator=g) * cross_scale
    return clt.layer_transcoders()


def some_interventions(rep):
    """Ablations of four active features spread over layers and positions, and one clamp."""
    active = rep.active_features()
    picks = active[torch.linspace(0, len(active) - 1, 4).long()].tolist()
    ivs = [Intervention.ablate(rep.transcoders[layer], latent, where=pos) for layer, pos, latent in picks]
    return ivs + [Intervention.clamp(rep.transcoders[1], 0, 2.0, where=4)]


@pytest.mark.parametrize("attention, downstream", MODES)
def test_a_clt_with_zero_cross_decoders_intervenes_like_its_per_layer_transcoders(tiny, attention, downstream):
    plain, clt = LocalReplacement(tiny, transcoders(tiny), PROMPT), LocalReplacement(tiny, clt_views(tiny, 0.0), PROMPT)
    assert torch.equal(plain.active_features(), clt.active_features())
    want = plain.intervene(some_interventions(plain), attention, downstream)
    torch.testing.assert_close(clt.intervene(some_interventions(clt), attention, downstream), want, rtol=0, atol=1e-5)
    assert (want[0] - plain.logits).abs().max() > 1e-3  # the interventions did something


def mlp_outputs(rep, interventions, attention, downstream) -> dict[str, torch.Tensor]:
    """Each layer's MLP output [n_pos, d_model] (resid_post - resid_mid) and MLP input in a replacement run."""
    names = [f"blocks.{m}.{h}" for m in range(rep.n_layers) for h in ("hook_resid_mid", "hook_resid_post", "ln2.hook_normalized")]
    acts = {}
    with rep.model.hooks(fwd_hooks=[(n, lambda act, hook: acts.__setitem__(hook.name, act[0].clone())) for n in names]):
        rep.intervene(interventions, attention, downstream)
    return {**{f"in{m}": acts[f"blocks.{m}.ln2.hook_normalized"] for m in range(rep.n_layers)},
            **{f"out{m}": acts[f"blocks.{m}.hook_resid_post"] - acts[f"blocks.{m}.hook_resid_mid"] for m in range(rep.n_layers)}}


@pytest.mark.parametrize("attention, downstream", MODES)
def test_ablating_a_clt_feature_changes_each_later_mlp_output_by_its_decoder_row(tiny, attention, downstream):
    """Known answer: ablating layer 0's feature at `pos` changes MLP 0 by -code * its own decoder row and MLP 1 by
    -code * its cross-layer row to layer 1, plus (downstream free) what layer 1's own features do as they
    respond to their changed input."""
    tcs = clt_views(tiny, 0.3)
    rep, pos = LocalReplacement(tiny, tcs, PROMPT), 3
    latent = int(rep.codes[0][pos].nonzero()[0, 0])
    code = rep.codes[0][pos, latent]
    clean = mlp_outputs(rep, [], attention, downstream)
    ablated = mlp_outputs(rep, [Intervention.ablate(tcs[0], latent, where=pos)], attention, downstream)
    own, cross = torch.zeros(len(PROMPT), 32), torch.zeros(len(PROMPT), 32)
    own[pos], cross[pos] = -code * tcs[0].W_dec[latent], -code * tcs[0].W_dec_cross[latent, 0]
    if downstream == "free":
        mask = rep.feature_positions[:, None]
        cross += ((tcs[1].encode(ablated["in1"]) - tcs[1].encode(clean["in1"])) * mask) @ tcs[1].W_dec
    torch.testing.assert_close(ablated["out0"] - clean["out0"], own, rtol=0, atol=1e-5)
    torch.testing.assert_close(ablated["out1"] - clean["out1"], cross, rtol=0, atol=1e-5)
    assert tcs[0].W_dec_cross[latent, 0].norm() * code.abs() > 0.1  # the cross-layer write is far above the tolerance
