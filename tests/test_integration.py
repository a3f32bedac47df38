"""End to end on the embedded SmolLM2-135M and Shakespeare (slow: run with -m slow)."""

import json

import pytest

from interp.cli import main

pytestmark = pytest.mark.slow


def test_default_pipeline_on_the_embedded_model(tmp_path):
    assert main(["train", "--tokens", "61440", "--batch-size", "2048", "--eval-contexts", "16", "--out", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["fvu"] < 0.6, m
    assert abs(m["l0"] - 32) <= 1, m
    assert m["ce_recovered"] > 0.5, m
    assert m["ce_loss_clean"] < m["ce_loss_spliced"] < m["ce_loss_zero_ablation"], m
