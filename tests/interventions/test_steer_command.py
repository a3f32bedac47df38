import pytest
import torch

from helpers import TINY, random_dictionary
from interp.cli import main
from interp.cli.steer_command import side_by_side, visible
from interp.interventions import AFTER_BOS, Intervention, continuation, generate, intervene
from interp.interventions.effects import next_token_changes

PROMPT = "the cat"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = random_dictionary("topk", d_in=32, d_dict=64, k=6, dtype="float32", hook_in="blocks.0.hook_resid_post",
                          model=TINY)
    return d, d.save(tmp_path_factory.mktemp("run") / "sae")


def test_next_token_changes_known_answer(tiny, run_dir):
    d, _ = run_dir
    iv = Intervention.add(d, 3, 6.0, where=AFTER_BOS)
    changes = next_token_changes(tiny, PROMPT, iv, k=4)
    tokens = torch.tensor([[256, *PROMPT.encode()]])
    before = tiny(tokens)[0, -1].log_softmax(-1)
    with intervene(tiny, iv):
        after = tiny(tokens)[0, -1].log_softmax(-1)
    assert [r["token_id"] for r in changes["up"]] == (after - before).topk(4).indices.tolist()
    assert [r["token_id"] for r in changes["down"]] == (before - after).topk(4).indices.tolist()
    top = changes["up"][0]
    assert top["after"] == pytest.approx(after[top["token_id"]].exp().item(), rel=1e-5) and top["change"] > 0


def test_steer_prints_both_continuations_and_the_top_changes(tiny, run_dir, capsys):
    d, folder = run_dir
    assert main(["steer", str(folder), "--latent", "3", "--coeff", "6", "--prompt", PROMPT, "--max-new-tokens", "8"]) == 0
    out = capsys.readouterr().out
    texts = [visible(continuation(tiny, generate(tiny, PROMPT, ivs, 8), 8))
             for ivs in ((), Intervention.add(d, 3, 6.0, where=AFTER_BOS))]
    assert texts[0] != texts[1]
    assert side_by_side(["unsteered", "latent 3 +6 x decoder"], texts) in out
    up = next_token_changes(tiny, PROMPT, Intervention.add(d, 3, 6.0, where=AFTER_BOS))["up"][0]
    assert visible(repr(up["token"])) in out.split("change in log p")[1].splitlines()[1]
    assert main(["steer", str(folder), "--latent", "3", "--ablate", "--prompt", PROMPT, "--max-new-tokens", "2",
                 "--hook", "blocks.0.hook_resid_post"]) == 0
    assert main(["steer", str(folder), "--latent", "3", "--clamp", "2.5", "--prompt", PROMPT, "--max-new-tokens", "2",
                 "--temperature", "1", "--seed", "4"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--latent", "64", "--coeff", "1"], "out of range"),
    (["--latent", "3", "--coeff", "nan"], "finite"),
    (["--latent", "3"], "--coeff C"),
    (["--latent", "3", "--coeff", "1", "--hook", "blocks.1.hook_resid_post"], "--hook"),
    (["--latent", "3", "--coeff", "1", "--max-new-tokens", "100"], "context"),
])
def test_bad_inputs_exit_2_with_one_line(run_dir, capsys, extra, message):
    _, folder = run_dir
    assert main(["steer", str(folder), "--prompt", PROMPT, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
