import torch

from helpers import assert_same_topk_codes, random_dictionary
from interp.data.activations import ActivationStore
from interp.data.tokens import take_contexts
from interp.dictionary import DictionaryConfig, architecture
from interp.data.gradients import activations_and_gradients, next_token_loss
from interp.training.loop import TrainConfig, train

HOOK = "blocks.1.hook_resid_mid"


def test_store_gradients_equal_autograd_on_the_model(tiny):
    tokens = take_contexts(tiny, "shakespeare", "train", 16, 3)
    out = activations_and_gradients(tiny, tokens, [HOOK], [HOOK, "blocks.0.hook_resid_post"])
    for name in (HOOK, "blocks.0.hook_resid_post"):
        delta = torch.zeros(*tokens.shape, tiny.cfg.d_model, requires_grad=True)
        logits = tiny.run_with_hooks(tokens, fwd_hooks=[(name, lambda act, hook: act + delta)])
        next_token_loss(tiny, tokens, logits).backward()
        assert torch.allclose(out[f"grad:{name}"], delta.grad, atol=1e-6)
    _, cache = tiny.run_with_cache(tokens)
    assert torch.equal(out[HOOK], cache[HOOK])

    store = ActivationStore(tiny, {"x": HOOK}, gradients={"grad": HOOK}, n_ctx=16, forward_batch=2)
    rows = store.harvest(tokens)
    assert torch.allclose(rows["grad"], out[f"grad:{HOOK}"][:, 1:].reshape(-1, tiny.cfg.d_model), atol=1e-6)


def test_gradient_selects_a_small_but_loss_relevant_latent():
    d = random_dictionary("topk", d_in=4, d_dict=4, k=1)
    g = architecture("gsae")(d.cfg.replace(arch="gsae", beta=4.0))
    with torch.no_grad():
        for sae in (d, g):
            sae.W_enc.copy_(torch.eye(4, dtype=torch.float64))
            sae.W_dec.copy_(torch.eye(4, dtype=torch.float64))
            sae.b_enc.zero_()
            sae.b_dec.zero_()
    x = torch.tensor([[1.0, 0.5, 0.0, 0.0]], dtype=torch.float64)
    grad = torch.tensor([[0.0, 3.0, 0.0, 0.0]], dtype=torch.float64)  # only latent 1 moves the loss
    assert d.training_forward(x).indices.tolist() == [[0]]
    assert g.training_forward(x, grad=grad).indices.tolist() == [[1]]  # 0.5 * (1 + 4) > 1
    assert g.encode(x).nonzero().tolist() == [[0, 0]]  # no gradient at inference: plain TopK
    zero_beta = architecture("gsae")(g.cfg.replace(beta=0.0))
    zero_beta.load_state_dict(g.state_dict())
    assert zero_beta.training_forward(x, grad=grad).indices.tolist() == [[0]]


def test_beta_zero_trains_exactly_like_topk(tiny, tmp_path):
    store = ActivationStore(tiny, {"x": HOOK}, gradients={"grad": HOOK}, n_ctx=32, batch_size=128, block_contexts=16)
    base = DictionaryConfig(arch="topk", d_in=32, d_dict=128, k=8, hook_in=HOOK, aux_k=16, dead_tokens=1000)
    topk, gsae0, gsae = (architecture(a)(base.replace(arch=a, beta=b)) for a, b in (("topk", 0), ("gsae", 0), ("gsae", 2.0)))
    out = train([topk, gsae0, gsae], store, TrainConfig(tokens=128 * 15, lr=1e-3), tmp_path)
    assert torch.equal(out[0].W_dec, out[1].W_dec) and torch.equal(out[0].W_enc, out[1].W_enc)
    assert not torch.equal(out[0].W_dec, out[2].W_dec)


def test_steering_effect_matches_a_direct_computation(tiny):
    from interp.analysis.steering import steering_effects

    d = random_dictionary("topk", d_in=32, d_dict=16, dtype="float32")
    d.cfg = d.cfg.replace(hook_in=HOOK, hook_out=HOOK)
    tokens = take_contexts(tiny, "shakespeare", "validation", 16, 2)
    effects = steering_effects(tiny, d, tokens, torch.tensor([3, 7]), scale=0.5)
    _, cache = tiny.run_with_cache(tokens)
    norm = cache[HOOK][:, 1:].norm(dim=-1).mean()
    direction = d.W_dec[7] / d.W_dec[7].norm()

    def add(act, hook):
        act = act.clone()
        act[:, 1:] += 0.5 * norm * direction  # position 0 is the only BOS in these contexts
        return act

    p = tiny(tokens)[:, :-1].log_softmax(-1)
    q = tiny.run_with_hooks(tokens, fwd_hooks=[(HOOK, add)])[:, :-1].log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)[:, 1:].mean()
    assert abs(effects[1].item() - kl.item()) < 1e-5 and effects[0] != effects[1]


def test_oracle_encode_selects_like_training_and_reduces_to_topk_at_beta_zero():
    from saes.gsae import GradientSAE

    d = random_dictionary("topk", d_in=8, d_dict=32, k=4, seed=1)
    g = GradientSAE(d.cfg.replace(arch="gsae", beta=3.0))
    g.load_state_dict(d.state_dict())
    x, grad = torch.randn(64, 8, dtype=torch.float64), torch.randn(64, 8, dtype=torch.float64)
    step = g.training_forward(x, grad=grad)
    oracle = g.encode(x, grad=grad)
    assert torch.equal(oracle, torch.zeros_like(oracle).scatter_(-1, step.indices, step.values.detach()))
    assert not torch.equal(oracle, g.encode(x))  # the gradient changed some selections
    zero = GradientSAE(g.cfg.replace(beta=0.0))
    zero.load_state_dict(g.state_dict())
    # the fused kernel (chunked GEMM) vs Tensor.topk on d's GEMM: equal up to rounding, same selections
    assert_same_topk_codes(zero.encode(x, grad=grad), d.encode(x), d.pre_acts(x), k=4, tol=1e-9)


def test_calibrated_threshold_known_answer():
    from saes.gsae import calibrated_threshold, thresholded

    d = random_dictionary("topk", d_in=4, d_dict=4, k=1)
    with torch.no_grad():
        d.W_enc.copy_(torch.eye(4, dtype=torch.float64))
        d.b_enc.zero_()
        d.b_dec.zero_()
    x = torch.tensor([[3.0, 1.0, 0.0, 0.0], [2.0, 0.5, 0.0, 0.0], [-1.0, 0.2, 0.0, 0.0]], dtype=torch.float64)
    assert calibrated_threshold(d, x) == 0.5  # k * n = 3 values must exceed theta (3, 2, 1): the 4th largest
    codes = thresholded(d, 0.5).encode(x)
    assert codes.nonzero().tolist() == [[0, 0], [0, 1], [1, 0]] and codes[0, 1] == 1.0
    assert calibrated_threshold(d, x, k=4) == 0.0  # fewer than k*n positive pre-activations: theta 0


def test_calibrated_threshold_gives_mean_l0_k_and_a_loadable_dictionary(tmp_path):
    from interp.dictionary import Dictionary
    from saes.gsae import calibrated_threshold, thresholded

    d = random_dictionary("topk", d_in=16, d_dict=64, k=6, seed=2, dtype="float32")
    gsae = architecture("gsae")(d.cfg.replace(arch="gsae", beta=1.0))
    gsae.load_state_dict(d.state_dict())
    x = torch.randn(500, 16)
    theta = calibrated_threshold(gsae, x, batch_size=64)  # several batches: the running top-k must be exact
    assert theta == calibrated_threshold(gsae, x, batch_size=10_000) > 0
    t = thresholded(gsae, theta, calibration="500 random rows")
    l0 = (t.encode(x) != 0).sum(-1).float()
    assert abs(l0.mean().item() - 6) < 1e-3 and l0.std() > 0  # k on average, not per token
    assert torch.equal(t.encode(x), torch.where(gsae.pre_acts(x) > theta, gsae.pre_acts(x), 0.0))
    back = Dictionary.load(t.save(tmp_path / "t"))
    assert back.cfg.training["from_arch"] == "gsae" and torch.equal(back.encode(x), t.encode(x))
