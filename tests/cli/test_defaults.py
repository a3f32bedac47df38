"""One set of defaults: the CLI's flags come from the config dataclasses, and training through the API and
through the CLI with the same settings writes the same cfg.json (and the same weights)."""

import dataclasses
import json

import torch
from safetensors.torch import load_file

from helpers import TINY
from interp import (ActivationStore, DictionaryConfig, TrainConfig, architecture, load_model, register, take_contexts,
                    train_and_save)
from interp.cli import build_parser, main
from interp.cli.flags import config_fields
from interp.cli.train_command import DICTIONARY_FIELDS, TRAIN_FIELDS

HOOK = "blocks.1.hook_resid_post"


def test_help_and_import_interp_stay_light():
    """`interp --help` builds every parser without torch; the public names resolve without saes or transcoders."""
    import subprocess
    import sys

    script = ("import sys, interp, interp.cli\ninterp.cli.build_parser()\nassert 'torch' not in sys.modules\n"
              "[getattr(interp, name) for name in interp.__all__]\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('saes', 'transcoders')))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_flag_defaults_are_the_dataclass_defaults():
    """interp.cli.flags reads the configs' source without importing it; here the real classes check it."""
    args = build_parser().parse_args(["train"])
    for cls, names in ((DictionaryConfig, DICTIONARY_FIELDS + ["skip"]), (TrainConfig, TRAIN_FIELDS)):
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for name in names:
            assert getattr(args, name) == defaults[name], name
    parsed = config_fields("interp.dictionary", "DictionaryConfig")
    assert parsed["aux_k"].optional and parsed["aux_k"].kind is int and "AuxK" in parsed["aux_k"].help
    assert parsed["aux_coeff"].default == 1 / 32


def test_api_and_cli_defaults_write_the_same_run(tiny, tmp_path):
    budget = {"tokens": 128 * 12, "batch_size": 128, "n_ctx": 32, "eval_contexts": 2}
    assert main(["train", "--model", TINY, "--hook", HOOK, "--out", str(tmp_path / "cli"),
                 *[f"--{k.replace('_', '-')}={v}" for k, v in budget.items()]]) == 0

    model = load_model(TINY)
    store = ActivationStore(model, {"x": HOOK}, n_ctx=budget["n_ctx"], batch_size=budget["batch_size"])
    sae = architecture("topk")(DictionaryConfig(arch="topk", d_in=model.cfg.d_model, hook_in=HOOK))
    held_out = take_contexts(model, "shakespeare", "validation", budget["n_ctx"], budget["eval_contexts"])
    train_and_save(model, store, [sae], TrainConfig(tokens=budget["tokens"]), tmp_path / "api", held_out)

    cli, api = (json.loads((tmp_path / run / "cfg.json").read_text()) for run in ("cli", "api"))
    assert cli.keys() == api.keys()
    assert {k: (cli[k], api[k]) for k in cli if cli[k] != api[k]} == {}
    assert (cli["k"], cli["aux_k"], cli["dead_tokens"], cli["d_dict"]) == (32, 16, 153, 256)  # dead window: a tenth of the run
    cli_w, api_w = (load_file(tmp_path / run / "sae.safetensors") for run in ("cli", "api"))
    assert all(torch.equal(cli_w[k], api_w[k]) for k in cli_w)
    assert not (tmp_path / "cli" / "checkpoint.safetensors").exists()  # removed once the run folder is written


@register("planted_topk")
class PlantedTopK(architecture("topk")):
    """TopK with latent 0 planted dead at initialisation: its encoder column scaled down 1000x, so it never
    reaches the top k on its own."""

    def init_from_data(self, x, target, generator):
        super().init_from_data(x, target, generator)
        with torch.no_grad():
            self.W_enc[:, 0] *= 1e-3


def test_default_auxk_revives_a_planted_dead_latent(tiny, tmp_path):
    """With the defaults (AuxK on d_in/2 latents, dead after a tenth of the run) the planted latent wins top-k
    slots again on held-out activations; with AuxK off it stays dead. (Measured: 0.32 of tokens vs 0.)"""
    k = 16
    held_out = ActivationStore(tiny, {"x": HOOK}, split="validation", n_ctx=32, batch_size=512).block_rows(0)["x"]

    def trained(out: str, **fields) -> tuple[dict, float]:
        store = ActivationStore(tiny, {"x": HOOK}, n_ctx=32, batch_size=128)
        sae = PlantedTopK(DictionaryConfig(arch="planted_topk", d_in=32, d_dict=64, k=k, hook_in=HOOK, **fields))
        folder = train_and_save(tiny, store, [sae], TrainConfig(tokens=128 * 60, lr=3e-3), tmp_path / out,
                                take_contexts(tiny, "shakespeare", "validation", 32, 2))[0]
        w = load_file(folder / "sae.safetensors")
        pre = (held_out - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
        firing = (pre.topk(k, dim=-1).indices == 0).any(-1).float().mean().item()
        return json.loads((folder / "cfg.json").read_text()), firing

    cfg, revived = trained("defaults")
    assert cfg["aux_k"] == 16 and cfg["dead_tokens"] == 768
    _, control = trained("no_auxk", aux_k=0)
    assert control == 0  # without AuxK the planted latent stays dead
    assert revived > 0.05  # with the default AuxK it fires again
