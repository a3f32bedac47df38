import torch

from interp.data.activations import ActivationStore
from interp.data.tokens import take_contexts
from interp.dictionary import Dictionary, architecture
from interp.analysis.evals import evaluate
from interp.training.loop import TrainConfig, train
from transcoders import mlp_hooks, transcoder_config


def test_transcoder_splice_replaces_the_mlp_output(tiny):
    """A transcoder whose output is the true MLP (computed here) splices in without changing the loss."""
    cfg = transcoder_config(32, layer=1, arch="relu", d_dict=64, l1_coeff=1.0)
    tc = architecture("relu")(cfg)
    assert tc.cfg.hook_in == "blocks.1.ln2.hook_normalized" and tc.cfg.hook_out == "blocks.1.hook_mlp_out"
    mlp = tiny.blocks[1].mlp
    with torch.no_grad():  # latents = the MLP's neurons (gelu ~ relu is not exact, so compare a ReLU MLP below)
        tc.W_enc.copy_(mlp.W_in)
        tc.b_enc.copy_(mlp.b_in)
        tc.W_dec.copy_(mlp.W_out)
        tc.b_dec.copy_(mlp.b_out)
    x = torch.randn(20, 32)
    assert torch.allclose(tc(x), torch.relu(x @ mlp.W_in + mlp.b_in) @ mlp.W_out + mlp.b_out, atol=1e-5)


def test_transcoders_train_on_input_target_pairs(tiny, tmp_path):
    """Plain and skip transcoders from one (input, target) stream; the skip path helps a random MLP."""
    store = ActivationStore(tiny, mlp_hooks(1), n_ctx=32, batch_size=128, block_contexts=32)
    plain, skip = (architecture("topk")(transcoder_config(32, layer=1, skip=s, d_dict=128, k=8)) for s in (False, True))
    trained = train([plain, skip], store, TrainConfig(tokens=128 * 80, lr=3e-3), tmp_path, target_key="target")
    held_out = take_contexts(tiny, "shakespeare", "validation", 32, 8)
    fvu = [evaluate(tiny, t, held_out)[0]["fvu"] for t in trained]
    assert fvu[1] < fvu[0] < 0.95, fvu
    trained[1].save(tmp_path / "tc")
    back = Dictionary.load(tmp_path / "tc")
    x = torch.randn(5, 32)
    assert back.cfg.skip and torch.allclose(back(x), trained[1](x))


def test_skip_path_folds_scales_exactly():
    tc = architecture("topk")(transcoder_config(8, layer=0, skip=True, d_dict=16, k=4, dtype="float64"))
    with torch.no_grad():
        for p in tc.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(10, 8, dtype=torch.float64)
    assert torch.allclose(tc.exported(2.0, 5.0)(x), tc(x * 2.0) / 5.0)
