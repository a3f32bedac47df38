"""SAE-Lens's and sparsify's own trainers on the end-to-end job; imported by end_to_end_runner.py inside the
throwaway environment of bench_end_to_end.py (which has these libraries, and not this toolkit).

Both read the same token file as the bare forward (contexts of 128 tokens, BOS first), exclude BOS from
training as ours does, train a TopK SAE (k 32, 4,608 latents) at the output of block `layer`, 4,096
activations per step, with logging to W&B, checkpoints and evals off.
"""

import time
from pathlib import Path

import torch


def _tokens(job) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(job["tokens_file"])["tokens"]


def _hooked_model(job):
    """The HF folder as a TransformerLens HookedTransformer (SAE-Lens trains on those), converted as TransformerLens
    3.x converts Llama models (the same conversion as interp.model, written out here)."""
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = job["hf_dir"]
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    cfg = loading.get_pretrained_model_config(path, device=job["device"], dtype=torch.float32, fold_ln=False)
    state = loading.get_pretrained_state_dict(path, cfg, hf_model=hf, dtype=torch.float32)
    model = HookedTransformer(cfg, tokenizer=AutoTokenizer.from_pretrained(path), move_to_device=False)
    model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False, refactor_factored_attn_matrices=False)
    return model.to(job["device"])


def sae_lens(job) -> tuple[int, float, str]:
    from datasets import Dataset
    from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAEConfig

    model = _hooked_model(job)
    tokens = _tokens(job)
    dataset = Dataset.from_dict({"input_ids": tokens.tolist()})
    cfg = LanguageModelSAERunnerConfig(
        sae=TopKTrainingSAEConfig(d_in=model.cfg.d_model, d_sae=job["d_dict"], k=job["k"]),
        model_name=job["hf_dir"], hook_name=f"blocks.{job['layer']}.hook_resid_post", dataset_path=job["tokens_file"],
        is_dataset_tokenized=True, streaming=False, context_size=tokens.shape[1], prepend_bos=False,
        exclude_special_tokens=[int(tokens[0, 0])], training_tokens=job["tokens"], train_batch_size_tokens=job["batch"],
        store_batch_size_prompts=32, n_batches_in_buffer=64, device=job["device"], logger=LoggingConfig(log_to_wandb=False), n_checkpoints=0,
        save_final_checkpoint=False, output_path=str(Path(job["out"]) / "sae-lens"), checkpoint_path=str(Path(job["out"]) / "ckpt"),
        verbose=False,
    )
    start = time.perf_counter()
    LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model).run()
    return job["tokens"], time.perf_counter() - start, ("LanguageModelSAETrainingRunner with the model and tokens passed in; "
                                                        "n_batches_in_buffer 64 (its default 20 x 128-token contexts is a "
                                                        "2,560-token buffer, below one 4,096 batch: it refuses to start)")


def sparsify(job) -> tuple[int, float, str]:
    from datasets import Dataset
    from sparsify import SparseCoderConfig, Trainer, TrainConfig
    from transformers import AutoModel

    model = AutoModel.from_pretrained(job["hf_dir"], dtype=torch.float32).to(job["device"])
    tokens = _tokens(job)
    contexts = -(-job["tokens"] // (tokens.shape[1] - 1))  # enough contexts for job["tokens"] non-BOS activations
    dataset = Dataset.from_dict({"input_ids": tokens[:contexts].tolist()}).with_format("torch")
    cfg = TrainConfig(SparseCoderConfig(num_latents=job["d_dict"], k=job["k"]), batch_size=job["batch"] // tokens.shape[1],
                      hookpoints=[f"layers.{job['layer']}"], exclude_tokens=[int(tokens[0, 0])], log_to_wandb=False,
                      save_every=10**9, save_dir=str(Path(job["out"]) / "sparsify"))
    trainer = Trainer(cfg, dataset, model)
    start = time.perf_counter()
    trainer.fit()
    done = len(dataset) // cfg.batch_size * cfg.batch_size * (tokens.shape[1] - 1)
    return done, time.perf_counter() - start, "Trainer.fit on the HF model (fvu loss: it runs every layer of the model)"


RUNNERS = {"sae-lens": sae_lens, "sparsify": sparsify}
