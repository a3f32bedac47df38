import json

import pytest
import torch

from interp.data.corpus import markdown_to_text, play_names, split_plays
from interp.data.tokens import iter_texts, take_contexts, token_mask
from interp.model import BYTE_VOCAB


def test_markdown_is_stripped_to_plain_text():
    md = "# Play\n\n## ACT I\n\n_Enter HAMLET_\n\n**HAMLET**  \nTo be, or _not_ to be  \n\n\n\n**HORATIO**  \nAy.\n"
    assert markdown_to_text(md) == "HAMLET:\nTo be, or not to be\n\nHORATIO:\nAy.\n"


def test_validation_plays_are_unseen():
    train, val = set(split_plays("train")), set(split_plays("validation"))
    assert not train & val and train | val == set(play_names()) and len(val) >= 5


def test_contexts_start_with_bos_and_pack_documents(tiny, tmp_path):
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in ["abc", "defgh", "ij"] * 20))
    ctx = take_contexts(tiny, str(tmp_path / "docs.jsonl"), "train", n_ctx=6, n=3)
    bos = BYTE_VOCAB - 1
    assert ctx.shape == (3, 6) and (ctx[:, 0] == bos).all()
    # the packed stream is the documents joined by BOS (the 20th document is held out)
    flat = torch.cat([c[1:] for c in ctx]).tolist()
    assert flat[:13] == [*b"abc", bos, *b"defgh", bos, *b"ij", bos]
    assert not token_mask(tiny, ctx)[:, 0].any()


def test_local_text_holdout_is_disjoint(tmp_path):
    (tmp_path / "a.txt").write_text("\n".join(f"line {i}" for i in range(100)))
    train = list(iter_texts(str(tmp_path / "a.txt"), "train"))
    val = list(iter_texts(str(tmp_path / "a.txt"), "validation"))
    assert len(train) == 95 and len(val) == 5 and not set(train) & set(val)


def test_bad_sources_fail_clearly(tiny, tmp_path):
    (tmp_path / "d.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match="no column 'text'"):
        list(iter_texts(str(tmp_path / "d.jsonl")))
    with pytest.raises(ValueError, match="n_ctx"):
        take_contexts(tiny, "shakespeare", "train", n_ctx=1, n=1)
