import pytest
import torch

from interp.data.activations import ActivationStore
from interp.dictionary import Dictionary, DictionaryConfig, architecture
from interp.training.loop import TrainConfig, train
from interp.training.losses import reconstruction_loss

HOOK = "blocks.1.hook_resid_post"


def make(arch, **fields):
    fields = {"k": 8, "aux_k": 16, "dead_tokens": 1024, **fields}
    return architecture(arch)(DictionaryConfig(arch=arch, d_in=32, d_dict=128, hook_in=HOOK, **fields))


def store(model):
    return ActivationStore(model, {"x": HOOK}, n_ctx=32, batch_size=128, block_contexts=32, forward_batch=16)


def test_one_prefix_trains_exactly_like_batchtopk(tiny, tmp_path):
    cfg = TrainConfig(tokens=128 * 12, lr=1e-3, checkpoint_every=1000)
    (ref,) = train([make("batchtopk")], store(tiny), cfg, tmp_path / "b")
    for prefixes in ([], [128]):
        (m,) = train([make("matryoshka", prefixes=prefixes)], store(tiny), cfg, tmp_path / f"m{len(prefixes)}")
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
            assert torch.equal(getattr(m, name), getattr(ref, name)), name


def test_loss_is_the_sum_of_prefix_reconstructions():
    d = make("matryoshka", prefixes=[16, 48, 128])
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in d.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    x = torch.randn(64, 32, generator=g)
    step = d.training_forward(x)
    slow = 0.0
    for width in (16, 48):  # the slow reference: decode each prefix from scratch
        slow = slow + reconstruction_loss(step.codes[:, :width] @ d.W_dec[:width] + d.b_dec, x)
    torch.testing.assert_close(d.sparsity_loss(step), slow)
    torch.testing.assert_close(step.recon, step.codes @ d.W_dec + d.b_dec)


def test_prefixes_make_the_first_latents_reconstruct_alone(tiny, tmp_path):
    """The first 16 latents of a Matryoshka SAE reconstruct far better on their own than BatchTopK's first 16."""
    cfg = TrainConfig(tokens=128 * 60, lr=3e-3, warmup_steps=5, checkpoint_every=1000)
    plain, nested = train([make("batchtopk"), make("matryoshka", prefixes=[16, 128])], store(tiny), cfg, tmp_path)
    x = next(iter(store(tiny)))["x"]

    def prefix_fvu(d):
        codes = d.encode(x)
        recon = codes[:, :16] @ d.W_dec[:16] + d.b_dec
        return ((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()

    assert prefix_fvu(nested) < 0.8 * prefix_fvu(plain)


def test_save_load_round_trip_and_bad_prefixes(tmp_path):
    d = make("matryoshka", prefixes=[32, 128])
    with torch.no_grad():
        d.threshold.fill_(0.25)
        d.W_enc.normal_()
    loaded = Dictionary.load(d.save(tmp_path / "m"))
    assert type(loaded) is type(d) and loaded.cfg == d.cfg and loaded.cfg.prefixes == [32, 128]
    x = torch.randn(5, 32)
    torch.testing.assert_close(loaded(x), d(x))
    assert make("matryoshka", prefixes=[32]).cfg.prefixes == [32]  # d_dict is the implicit last prefix
    for bad in ([256], [64, 32, 128], [0, 128]):
        with pytest.raises(ValueError, match="strictly increasing"):
            make("matryoshka", prefixes=bad)
    with pytest.raises(ValueError, match="SAEs"):
        make("matryoshka", hook_out="blocks.1.hook_mlp_out")


def test_saelens_export_is_jumprelu_with_the_global_threshold_and_round_trips(tmp_path):
    import json

    from interp.io.saelens import load_saelens, save_saelens

    d = make("matryoshka", prefixes=[32, 128])
    with torch.no_grad():
        d.threshold.fill_(0.5)
        d.W_enc.normal_()
    folder = save_saelens(d, tmp_path / "sl")
    assert json.loads((folder / "cfg.json").read_text())["architecture"] == "jumprelu"
    back = load_saelens(folder)
    assert back.arch == "matryoshka" and back.cfg.prefixes == [32, 128]
    x = torch.randn(7, 32)
    torch.testing.assert_close(back(x), d(x))
