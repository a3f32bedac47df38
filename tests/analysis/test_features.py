import argparse
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
from plotly.offline import get_plotlyjs

from helpers import clear_rows, random_dictionary
from interp.analysis.attention import head_attribution
from interp.cli import features_command
from interp.data.tokens import take_contexts
from interp.dictionary import DictionaryConfig, architecture
from interp.analysis.feature_stats import FeatureAccumulator
from interp.analysis.features import FeatureStats, compute_feature_stats, logit_effect, nearest_features, residual_directions
from interp.model import bos_token_id
from interp.viz.dashboard import feature_html, search, show_feature, show_index, write_site

TINY = "tiny:n_layers=2,d_model=32,n_heads=4,d_mlp=64,n_ctx=64"
EVIL = '<script>alert("x")</script> \'q\' & \x07\x1b\x00 end'
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def token_detector(tiny, token: int) -> tuple:
    """A ReLU dictionary at hook_embed whose latent 0 fires exactly on `token` (1 above the best other token)."""
    W_E = tiny.W_E.detach().double()
    u = W_E[token] / W_E[token].norm()
    proj = W_E @ u
    others = torch.cat([proj[:token], proj[token + 1:]]).max()
    assert proj[token] - others > 0.05, "pick a token whose embedding stands out along its own direction"
    cfg = DictionaryConfig(arch="relu", d_in=32, d_dict=3, l1_coeff=1.0, hook_in="hook_embed", model=TINY, dtype="float64")
    d = architecture("relu")(cfg)
    with torch.no_grad():
        d.W_enc[:, 0] = u
        d.b_enc[0] = -(others + proj[token]) / 2
        d.W_enc[:, 1] = -u  # latent 1 fires on many tokens, latent 2 never
        d.b_enc[2] = -100.0
        d.W_dec.copy_(torch.randn(3, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    return d, float(proj[token] - (others + proj[token]) / 2)


def best_token(tiny) -> int:
    W_E = tiny.W_E.detach()
    gaps = {}
    for t in map(ord, "etaoinshr"):
        proj = W_E @ (W_E[t] / W_E[t].norm())
        gaps[t] = (proj[t] - torch.cat([proj[:t], proj[t + 1:]]).max()).item()
    return max(gaps, key=gaps.get)


@pytest.fixture(scope="module")
def detector(tiny):
    token = best_token(tiny)
    d, value = token_detector(tiny, token)
    tokens = take_contexts(tiny, "shakespeare", "train", 32, 24)
    return token, d, value, tokens, compute_feature_stats(tiny, d, tokens=tokens, contexts=24, batch_size=8, n_top=6)


def test_token_detector_shows_its_token_in_every_top_context(tiny, detector):
    token, d, value, tokens, stats = detector
    t = stats.tensors
    n_token = int((tokens == token).sum())
    assert int(t["fires"][0]) == n_token and stats.meta["tokens_seen"] == int((tokens != bos_token_id(tiny)).sum())
    assert (t["top_tokens"][0, :, stats.meta["left"]] == token).all()
    assert torch.allclose(t["top_value"][0], torch.tensor(value, dtype=torch.float32))
    assert torch.equal(t["top_acts"][0, :, stats.meta["left"]], t["top_value"][0])  # the window's centre is the hit
    # the window around each hit is the corpus text around it
    for ctx, pos, window in zip(t["top_ctx"][0].tolist(), t["top_pos"][0].tolist(), t["top_tokens"][0].tolist()):
        lo = pos - stats.meta["left"]
        expected = [tokens[ctx, p].item() if 0 <= p < tokens.shape[1] else -1 for p in range(lo, lo + len(window))]
        assert window == expected
    assert stats.top_tokens(0)[0] == (chr(token), 6)
    filled = t["sample_value"][0] > 0
    assert (t["sample_tokens"][0][filled][:, stats.meta["left"]] == token).all()
    assert int(t["fires"][2]) == 0 and int(t["hist"][0].sum()) == n_token
    html = show_feature(stats, 0)._repr_html_()
    assert html.count('class="a hit"') == 6 + int(filled.sum())


def test_logit_effect_is_the_exact_change_through_the_frozen_final_norm(tiny, detector):
    _, d, _, tokens, stats = detector
    s = stats.meta["final_scale"]
    _, cache = tiny.run_with_cache(tokens[:8])  # the scale is measured on the first batch
    assert abs(s - cache["ln_final.hook_scale"][tokens[:8] != bos_token_id(tiny)].mean().item()) < 1e-5
    r = cache["blocks.1.hook_resid_post"][0, 5].double()
    frozen = [("ln_final.hook_scale", lambda act, hook: torch.full_like(act, s))]
    tiny_d = tiny.to(torch.float64)
    try:
        with tiny_d.hooks(fwd_hooks=frozen):
            for i in range(3):
                direct = tiny_d.unembed(tiny_d.ln_final(r + d.W_dec[i])[None, None])[0, 0] - \
                    tiny_d.unembed(tiny_d.ln_final(r)[None, None])[0, 0]
                effect = logit_effect(tiny_d, d, s, torch.tensor([i]))[0]
                assert torch.allclose(effect, direct, atol=1e-9)
                top = direct.topk(10)
                # float32 stats vs this float64 reference: the ids need not match where effects tie within
                # rounding, but the effects they name must be the reference's top 10, in order
                ids = stats.tensors["logit_top_ids"][i]
                assert len(set(ids.tolist())) == 10
                torch.testing.assert_close(direct[ids], top.values, rtol=0, atol=1e-4)
                assert torch.allclose(stats.tensors["logit_top"][i].double(), top.values, atol=1e-4)
                assert torch.allclose(stats.tensors["logit_bottom"][i].double(), direct.topk(10, largest=False).values,
                                      atol=1e-4)
    finally:
        tiny.to(torch.float32)


def test_accumulator_matches_a_brute_force_reference_and_its_size_is_fixed():
    g = torch.Generator().manual_seed(0)
    batches = [torch.relu(torch.randn(3, 16, 5, generator=g) * torch.tensor([1, 2, 8, 0.5, 30.0]) - 0.5) for _ in range(6)]
    tokens = [torch.randint(0, 50, (3, 16), generator=g) for _ in batches]
    acc = FeatureAccumulator(5, n_top=7, bands=3, per_band=2, left=3, right=2, bins=16)
    acc.update(tokens[0], batches[0], 0)
    size = acc.nbytes()
    for b in range(1, 6):
        acc.update(tokens[b], batches[b], 3 * b)
    assert acc.nbytes() == size  # bounded: state does not grow with tokens
    codes = torch.cat(batches).reshape(-1, 5)
    assert torch.equal(acc.fires, (codes > 0).sum(0))
    assert torch.allclose(acc.top.value, codes.topk(7, dim=0).values.T)
    upper = acc.hist_upper
    for f in range(5):
        v = codes[:, f][codes[:, f] > 0]
        assert upper[f] >= v.max() and upper[f] < 2 * v.max() or upper[f] == torch.exp2(torch.ceil(torch.log2(v.max())))
        ref = torch.bincount((v / upper[f] * 16).long().clamp(max=15), minlength=16)
        assert torch.equal(acc.hist[f], ref)
    samples = acc.samples.value.reshape(5, 3, 2)
    assert ((samples > 0).sum((1, 2)) >= 2).all()  # samples span several bands


def test_stats_state_does_not_grow_with_tokens(tiny):
    d = random_dictionary("topk", d_in=32, d_dict=20, k=3, dtype="float32", hook_in="blocks.0.hook_resid_post")
    small = compute_feature_stats(tiny, d, n_ctx=32, contexts=4, batch_size=4)
    large = compute_feature_stats(tiny, d, n_ctx=32, contexts=24, batch_size=4)
    assert large.meta["tokens_seen"] == 6 * small.meta["tokens_seen"]
    size = {k: (v.shape, v.dtype) for k, v in small.tensors.items()}
    assert size == {k: (v.shape, v.dtype) for k, v in large.tensors.items()}


def test_transcoder_reads_hook_in_and_attention_sae_attributes_heads(tiny):
    tc = random_dictionary("topk", d_in=32, d_dict=16, k=3, dtype="float64", hook_in="blocks.0.ln2.hook_normalized",
                           hook_out="blocks.0.hook_mlp_out", subtract_b_dec=False)
    tokens = take_contexts(tiny, "shakespeare", "train", 24, 6)
    stats = compute_feature_stats(tiny, tc, tokens=tokens, batch_size=3)
    _, cache = tiny.run_with_cache(tokens)
    mask = tokens != bos_token_id(tiny)
    x = cache["blocks.0.ln2.hook_normalized"][mask].double()
    codes = tc.encode(x)  # batches of 3 vs 6 contexts: another BLAS may round them differently, so a row
    unclear = int((~clear_rows(tc.pre_acts(x), 3, 1e-5)).sum())  # without a selection margin may move 2 counts
    assert (stats.tensors["fires"] - (codes > 0).sum(0)).abs().sum() <= 2 * unclear
    assert torch.allclose(stats.tensors["act_sum"], codes.sum(0), atol=1e-4)

    hook = "blocks.1.attn.hook_z"
    z_sae = random_dictionary("topk", d_in=32, d_dict=12, k=3, dtype="float64", hook_in=hook, seed=3)
    stats = compute_feature_stats(tiny, z_sae, tokens=tokens, batch_size=3)
    z = cache[hook][mask].double()
    codes = z_sae.encode(z.flatten(1))
    for i in range(12):
        fired = codes[:, i] > 0
        contributions, _ = head_attribution(z_sae, z[fired], i)
        assert torch.allclose(stats.tensors["head_sum"][i], contributions.sum(0), atol=1e-4)
    W_O = tiny.blocks[1].attn.W_O.detach().double()
    assert torch.allclose(residual_directions(tiny, z_sae)[4], torch.einsum("hd,hdm->m", z_sae.W_dec[4].reshape(4, 8), W_O))
    assert "Per-head attribution" in feature_html(stats, int(stats.tensors["fires"].argmax()))
    ids, cos = nearest_features(z_sae, 3)
    W = z_sae.W_dec / z_sae.W_dec.norm(dim=1, keepdim=True)
    assert torch.allclose(cos[0].double(), (W[1:] @ W[0]).topk(3).values, atol=1e-6) and 0 not in ids[0].tolist()


def _outputs(stats: FeatureStats, out: Path) -> list[str]:
    write_site(stats, out)
    plotly_js = get_plotlyjs()  # third-party code inlined verbatim; everything else is ours
    return [p.read_text().replace(plotly_js, "") for p in out.rglob("*") if p.is_file()] + \
        [show_feature(stats, i)._repr_html_() for i in range(stats.d_dict)] + [show_index(stats)._repr_html_()]


def test_every_token_string_is_escaped(tiny, tmp_path):
    corpus = tmp_path / "evil.txt"
    corpus.write_text("\n".join([EVIL.replace("\x00", "")] * 30) + "\n")  # NUL marks a binary file; EVIL enters below
    d = random_dictionary("relu", d_in=32, d_dict=4, dtype="float32", hook_in="blocks.0.hook_resid_post")
    with torch.no_grad():
        d.b_enc.fill_(50.0)  # fire on every token, so every corpus byte appears in the contexts
    stats = compute_feature_stats(tiny, d, source=str(corpus), n_ctx=32, contexts=6, batch_size=3, n_top=30)
    assert {ord("<"), ord('"'), ord("'"), 7, 27} <= set(stats.vocab)
    stats.vocab[ord("s")] = EVIL  # a multi-character token string, as BPE tokenizers have
    stats.save(tmp_path / "stats")
    stats = FeatureStats.load(tmp_path / "stats")
    assert stats.vocab[ord("s")] == EVIL
    pages = _outputs(stats, tmp_path / "site")
    allowed = re.compile(r"</?(div|span|h[1-4]|p|table|thead|tbody|tr|td|th|svg|rect|text|title|style|script|a|input|"
                         r"html|head|body|meta|!DOCTYPE)\b[^<>]*>", re.I)
    for page in pages:
        assert EVIL not in page
        assert not CONTROL.search(page)
        body = page.split("<body>")[-1] if "<body>" in page else page
        body = re.sub(r"<script>.*?</script>", "", body, flags=re.S)  # the app script; its data is checked below
        assert "<" not in allowed.sub("", body)
    data = [p for p in pages if p.startswith("window.interpFeature(")]
    assert data and all("<" not in p and ">" not in p for p in data)
    assert any("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &#x27;q&#x27; &amp; \\x07\\x1b\\x00" in p for p in pages)
    assert search(stats, "script") == sorted(search(stats, "script"), key=lambda i: -float(stats.density[i]))


def test_cli_writes_stats_and_site(tiny, tmp_path):
    d = random_dictionary("topk", d_in=32, d_dict=10, k=2, dtype="float32", hook_in="blocks.1.hook_resid_post", model=TINY)
    d.save(tmp_path / "run")
    p = argparse.ArgumentParser()
    features_command.add_arguments(p)
    args = p.parse_args([str(tmp_path / "run"), "--out", str(tmp_path / "site"), "--contexts", "6", "--n-ctx", "32",
                         "--features", "4"])
    assert features_command.run(args) == 0
    assert len(list((tmp_path / "site" / "data").glob("f*.js"))) == 4
    assert FeatureStats.load(tmp_path / "site" / "stats").meta["contexts"] == 6


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install -y chromium)")
def test_site_opens_in_headless_chromium_without_console_errors(detector, tmp_path):
    stats = detector[-1]
    index = write_site(stats, tmp_path / "site")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=4000"]
    url = index.as_uri() + "#f=0"

    def chromium(*extra):
        with tempfile.TemporaryDirectory() as profile:
            return subprocess.run(["chromium", *flags, f"--user-data-dir={profile}", *extra, url],
                                  capture_output=True, text=True, timeout=60)

    dom = chromium("--dump-dom")
    shot = chromium(f"--screenshot={tmp_path / 'shot.png'}", "--window-size=1280,900")
    for result in (dom, shot):
        assert not [line for line in result.stderr.splitlines() if ":CONSOLE" in line], result.stderr
    assert 'id="feature-0"' in dom.stdout and 'class="main-svg"' in dom.stdout  # lazy page loaded, plotly drew
    assert dom.stdout.count('class="feature-row"') == stats.d_dict
    assert (tmp_path / "shot.png").stat().st_size > 10_000
