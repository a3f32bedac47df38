import pytest
import torch

from interp.model import EMBEDDED, load_model, validate_hook


def write_hf_checkpoint(folder):
    """A tiny random Llama checkpoint with its own BPE tokenizer, as `save_pretrained` writes it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(["to be or not to be, that is the question"] * 20,
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rope_theta=10000.0,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(folder)
    fast.save_pretrained(folder)
    return hf


@pytest.mark.parametrize("name", ["plain-checkpoint", "my-llama-checkpoint"])
def test_local_hf_folder_matches_hf_log_probs(tmp_path, name):
    hf = write_hf_checkpoint(tmp_path / name)
    model = load_model(str(tmp_path / name))
    ids = torch.tensor([[1, 5, 9, 20, 7, 30, 3]])
    with torch.no_grad():
        ours = model(ids).log_softmax(-1)
        theirs = hf(ids).logits.log_softmax(-1)
    assert (ours - theirs).abs().max() < 1e-4


def test_loading_matches_transformer_lens_own_loader_bit_for_bit(tmp_path):
    """load_model loads the state dict in one call and stores the gated MLP's and the unembedding's
    weights as transposes of contiguous tensors (so TransformerLens's per-forward `.T.contiguous()`
    copies nothing): every tensor and the logits equal what TransformerLens's own loader gives."""
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoTokenizer

    folder = tmp_path / "checkpoint"
    hf = write_hf_checkpoint(folder)
    model = load_model(str(folder))
    cfg = loading.get_pretrained_model_config(str(folder), device="cpu", dtype=torch.float32, fold_ln=False)
    reference = HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(folder), move_to_device=False)
    reference.load_and_process_state_dict(
        loading.get_pretrained_state_dict(str(folder), cfg, hf_model=hf, dtype=torch.float32), fold_ln=False,
        center_writing_weights=False, center_unembed=False, fold_value_biases=False)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    stored_transposed = [model.unembed.W_U] + [getattr(b.mlp, n) for b in model.blocks for n in ("W_gate", "W_in", "W_out")]
    assert all(w.T.is_contiguous() and not w.is_contiguous() for w in stored_transposed)
    ids = torch.tensor([[1, 5, 9, 20, 7, 30, 3]])
    with torch.no_grad():
        assert torch.equal(model(ids), reference.eval()(ids))


def test_bad_model_specs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="without config.json"):
        load_model(str(tmp_path))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="expected a .gguf file"):
        load_model(str(tmp_path / "weights.bin"))
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        load_model(str(tmp_path / "missing.gguf"))


def test_unknown_hook_suggests_close_names(tiny):
    with pytest.raises(ValueError, match=r"Closest: blocks\.1\.hook_resid_post"):
        validate_hook(tiny, "blocks.1.hook_resid_pots")


@pytest.mark.slow
def test_embedded_model_matches_hugging_face():
    from transformers import AutoModelForCausalLM

    from interp.model import _embedded_hf_dir

    model = load_model(EMBEDDED)
    hf = AutoModelForCausalLM.from_pretrained(_embedded_hf_dir(), dtype=torch.float32).eval()
    ids = model.to_tokens("The capital of France is")
    with torch.no_grad():
        ours, theirs = model(ids).log_softmax(-1), hf(ids).logits.log_softmax(-1)
    assert (ours - theirs).abs().max() < 1e-4
    assert model.tokenizer.decode(ours[0, -1].argmax()) == " Paris"


def test_transformer_lens_names_go_to_from_pretrained(monkeypatch, tiny):
    from transformer_lens import HookedTransformer

    seen = {}

    def fake(name, device, dtype):
        seen.update(name=name, device=device, dtype=dtype)
        return tiny

    monkeypatch.setattr(HookedTransformer, "from_pretrained_no_processing", staticmethod(fake))
    model = load_model("gpt2-small")
    assert seen == {"name": "gpt2-small", "device": "cpu", "dtype": torch.float32} and model.spec == "gpt2-small"
    assert not any(p.requires_grad for p in model.parameters())
