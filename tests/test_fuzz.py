"""Fuzz the front doors: flags out of range for every command, truncated / foreign / hostile files for
every format we read, hostile strings in every HTML view (loaded in headless Chromium when installed).

Every bad input must end in one clear line: the CLI exits 2 with `error: ...` (or argparse's usage and
one error line) and no traceback; a loader raises a user error (interp.errors.USER_ERRORS) whose message
names the file. Each test prints `fuzz <what>: N bad inputs, M one clear line` for the lead's notes.
KNOWN_GAPS lists inputs that still fail, each with its reason; a gap that closes fails the test, so the
list stays true.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import time
import struct
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import random_dictionary
from interp.cli import main
from interp.errors import USER_ERRORS, one_line

HOOK = "blocks.1.hook_resid_post"
TINY = "tiny:n_layers=2,d_model=32,n_heads=4,d_mlp=64,n_ctx=128"  # the commands' default contexts fit
# A part of a case's name -> why such cases do not end in one clear line yet.
KNOWN_GAPS: dict[str, str] = {}


def known_gap(case: str) -> bool:
    return any(part in case for part in KNOWN_GAPS)


def tally(what: str, outcomes: dict[str, str | None], capsys) -> None:
    """outcomes: case -> None (one clear line) or what went wrong. Prints the count; fails on new or closed gaps."""
    clear = sum(v is None for v in outcomes.values())
    with capsys.disabled():
        print(f"\nfuzz {what}: {len(outcomes)} bad inputs, {clear} end in one clear line")
    broken = {k: v for k, v in outcomes.items() if v is not None and not known_gap(k)}
    closed = {part for part in KNOWN_GAPS if any(part in k for k in outcomes) and
              all(v is None for k, v in outcomes.items() if part in k)}
    assert not broken, "\n".join(f"{k}: {v}" for k, v in broken.items())
    assert not closed, f"every case of {closed} ends in one clear line now: remove it from KNOWN_GAPS"


# --- the command line ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny run folder, a tiny transcoder set and a few bad files the flags below point at."""
    root = tmp_path_factory.mktemp("fuzz")
    random_dictionary("topk", d_in=32, d_dict=64, k=4, dtype="float32", hook_in=HOOK, model=TINY).save(root / "run")
    for layer in (0, 1):
        random_dictionary("topk", d_in=32, d_dict=32, k=4, dtype="float32", model=TINY, subtract_b_dec=False,
                          hook_in=f"blocks.{layer}.ln2.hook_normalized", hook_out=f"blocks.{layer}.hook_mlp_out",
                          seed=layer).save(root / "tcs" / f"layer_{layer}")
    (root / "empty.txt").write_bytes(b"")
    (root / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (root / "a-file").write_text("not a folder")
    (root / "badcfg").mkdir()
    (root / "badcfg" / "config.json").write_text('{"model_type": ')
    (root / "broken.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**40, 2**40) + b"\x00" * 16)
    (root / "empty-dir").mkdir()
    return root


TRAIN = ["train", "--model", TINY, "--hook", HOOK, "--n-ctx", "32", "--batch-size", "64", "--tokens", "128",
         "--eval-contexts", "2"]


def cli_cases(f: Path) -> dict[str, list[str]]:
    out = ["--out", str(f / "out")]
    train = {f"train {' '.join(bad)}": [*TRAIN, *out, *bad] for bad in [
        ["--tokens", "0"], ["--tokens", "-5"], ["--tokens", "many"], ["--batch-size", "0"], ["--batch-size", "-64"],
        ["--checkpoint-every", "0"], ["--eval-contexts", "0"], ["--eval-contexts", "-1"], ["--n-ctx", "1"], ["--n-ctx", "999"],
        ["--lr", "-1"], ["--lr", "nan"], ["--device", "cuda"], ["--device", "toaster"], ["--dtype", "float8"],
        ["--hook", "blocks.9.hook_resid_post"], ["--hook", "<script>"], ["--arch", "nope"], ["--transcoder"],
        ["--transcoder", "--layer", "99"], ["--k", "0"], ["--width", "-1"],
        ["--source", str(f / "empty.txt")], ["--source", str(f / "binary.txt")], ["--model", str(f / "badcfg")],
        ["--model", str(f / "broken.gguf")], ["--model", "no-such-model"], ["--model", str(f / "empty-dir")],
        ["--shuffle-shards", "0", "--cache-dir", str(f / "empty-dir")], ["--shuffle-shards", "2"],
        ["--resume"], ["--seed", "x"]]}
    train["train --out under a file"] = [*TRAIN, "--out", str(f / "a-file" / "run")]
    train["train --out a finished run"] = [*TRAIN, "--out", str(f / "run")]
    run, tcs, site = str(f / "run"), str(f / "tcs"), ["--out", str(f / "site")]
    circuit = ["circuit", "--prompt", "ab", "--transcoders", tcs, "--out", str(f / "c.html"), "--n-ctx", "16",
               "--contexts", "2"]
    others = {
        "eval missing folder": ["eval", str(f / "nowhere")], "eval empty folder": ["eval", str(f / "empty-dir")],
        "eval a file": ["eval", str(f / "a-file")], "eval --eval-contexts 0": ["eval", run, "--eval-contexts", "0"],
        "eval --n-ctx 1": ["eval", run, "--n-ctx", "1"], "eval --split nope": ["eval", run, "--split", "nope"],
        "eval --model badcfg": ["eval", run, "--model", str(f / "badcfg")],
        "features --contexts 0": ["features", run, *site, "--contexts", "0"],
        "features --top 0": ["features", run, *site, "--top", "0"],
        "features --batch-size 0": ["features", run, *site, "--batch-size", "0"],
        "features --features -1": ["features", run, *site, "--features", "-1"],
        "features --out under a file": ["features", run, "--out", str(f / "a-file" / "site")],
        "features missing run": ["features", str(f / "nowhere"), *site],
        "darkmatter --train-contexts 0": ["darkmatter", run, "--train-contexts", "0", "--out", str(f / "d.html")],
        "darkmatter --ce-contexts -1": ["darkmatter", run, "--ce-contexts", "-1", "--out", str(f / "d.html")],
        "darkmatter --ridge -1": ["darkmatter", run, "--ridge", "-1", "--out", str(f / "d.html")],
        "darkmatter --previous missing": ["darkmatter", run, "--previous", str(f / "nowhere"), "--out", str(f / "d.html")],
        "circuit missing transcoders": ["circuit", "--prompt", "ab", "--transcoders", str(f / "nowhere"),
                                        "--out", str(f / "c.html")],
        "circuit --max-features 0": [*circuit, "--max-features", "0"],
        "circuit --node-threshold 2": [*circuit, "--node-threshold", "2"],
        "circuit --edge-threshold -1": [*circuit, "--edge-threshold", "-1"],
        "circuit --batch-size 0": [*circuit, "--batch-size", "0"],
        "circuit --prompt ''": ["circuit", "--prompt", "", *circuit[3:]],
        "circuit --out under a file": [*circuit[:5], "--out", str(f / "a-file" / "c.html")],
        "lib --contexts 0": ["lib", "--model", TINY, "--contexts", "0", "--out", str(f / "lib")],
        "lib --sources 0": ["lib", "--model", TINY, "--sources", "0", "--out", str(f / "lib")],
        "lib --points 0": ["lib", "--model", TINY, "--points", "0", "--out", str(f / "lib")],
        "lib --nodes nonsense": ["lib", "--model", TINY, "--nodes", "nonsense", "--out", str(f / "lib")],
    }
    return train | others


def one_clear_line(argv: list[str], capsys) -> str | None:
    """None when `interp argv` exits 2 with one `error: ...` line last on stderr (argparse: its usage, then
    `interp ...: error: ...`); progress bars may come before it."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse
        code = stop.code
    except BaseException as err:  # noqa: BLE001 - a traceback is what this test looks for
        return f"raised {type(err).__name__}: {str(err)[:200]}"
    lines = [line.split("\r")[-1] for line in capsys.readouterr().err.strip().splitlines()]
    errors = [line for line in lines if re.match(r"(error: |interp( \w+)?: error: )", line)]
    if code != 2:
        return f"exit {code}"
    if len(errors) != 1 or lines[-1] != errors[0] or "Traceback" in "".join(lines):
        return f"stderr {lines[-3:]}"
    return None


def test_every_command_answers_out_of_range_flags_with_one_clear_line(files, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("INTERP_CACHE", str(files / "cache"))
    outcomes, seconds = {}, {}
    for name, argv in cli_cases(files).items():
        start = time.perf_counter()
        outcomes[name] = one_clear_line(argv, capsys)
        seconds[name] = time.perf_counter() - start
    with capsys.disabled():
        print("\nslowest:", ", ".join(f"{n} {seconds[n]:.1f} s" for n in sorted(seconds, key=seconds.get)[-5:]))
    tally("command-line flags", outcomes, capsys)
    assert {p.name for p in (files / "run").iterdir()} == {"cfg.json", "sae.safetensors"}  # the finished run survived


# --- files we read -------------------------------------------------------------------------------
def safetensors_variants(valid: bytes) -> dict[str, bytes]:
    """Truncated, foreign and hostile versions of a valid safetensors file."""
    header = json.loads(valid[8:8 + struct.unpack("<Q", valid[:8])[0]])
    name = next(k for k in header if k != "__metadata__")

    def with_header(h) -> bytes:
        text = json.dumps(h).encode()
        return struct.pack("<Q", len(text)) + text + valid[8 + struct.unpack("<Q", valid[:8])[0]:]

    out = {f"truncated at {n}": valid[:n] for n in (0, 5, 8, 20, len(valid) // 2, len(valid) - 1)}
    out |= {"random bytes": os.urandom(256), "a PNG": b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "JSON": b'{"W_enc": 1}',
            "header length 2**62": struct.pack("<Q", 2**62) + valid[8:],
            "header not JSON": struct.pack("<Q", 5) + b"{{{{{" + valid[13:],
            "offsets past the end": with_header({**header, name: {**header[name], "data_offsets": [0, 2**40]}}),
            "shape huge": with_header({**header, name: {**header[name], "shape": [2**31, 2**31]}}),
            "dtype int8": with_header({**header, name: {**header[name], "dtype": "I8"}})}
    return out


def json_variants(valid: dict, strict: bool) -> dict[str, bytes]:
    """Broken versions of a valid JSON object (`strict`: the format refuses unknown fields; those that add
    fields as they grow, like SAELens's, accept them); variants that change nothing are left out."""
    text = json.dumps(valid).encode()
    first = next(iter(valid))
    out = {"truncated": text[: len(text) // 2], "a list": b"[]", "null": b"null", "empty": b"", "not UTF-8": b"\xff\xfe{",
            "nested 100000 deep": b"[" * 100_000 + b"]" * 100_000, f"without {first}": json.dumps(
                {k: v for k, v in valid.items() if k != first}).encode(),
            "wrong types": json.dumps({k: "x" if isinstance(v, (int, float)) else v for k, v in valid.items()}).encode(),
            "absurd sizes": json.dumps({k: 10**13 if isinstance(v, int) and not isinstance(v, bool) else v
                                        for k, v in valid.items()}).encode()}
    out |= {"unknown field": json.dumps({**valid, "evil": 1}).encode()} if strict else {}
    return {k: v for k, v in out.items() if v != text}


class Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/interp-fuzz-pwned",))


def loader_cases(root: Path):
    """(case name, folder or file the user gives, loader) for every hostile file of every format."""
    from interp.data.activations import CacheStore
    from interp.dictionary import Dictionary
    from interp.io.saelens import save_saelens
    from interp.model import load_model
    from interp.training.checkpoint import load_checkpoint
    from interp.training.loop import TrainConfig, train

    try:
        from interp.io.load import load_dictionary
    except ImportError:
        load_dictionary = Dictionary.load
    d = random_dictionary("topk", d_in=8, d_dict=16, k=2, dtype="float32")
    formats = {"ours": (d.save(root / "ours"), "cfg.json", "sae.safetensors", load_dictionary),
               "saelens": (save_saelens(d, root / "saelens") or root / "saelens", "cfg.json", "sae_weights.safetensors",
                           load_dictionary)}
    store = _synthetic_store(root / "cache")
    train([random_dictionary("topk", d_in=2, d_dict=4, k=1, dtype="float32")], store, TrainConfig(tokens=8, checkpoint_every=1),
          root / "ckpt")
    formats["checkpoint"] = (root / "ckpt", None, "checkpoint.safetensors", load_checkpoint)
    formats["manifest"] = (root / "cache", "manifest.json", None, CacheStore)
    formats["hf config"] = (root / "hf", "config.json", None, lambda path: load_model(str(path)))
    (root / "hf").mkdir()
    (root / "hf" / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8}))
    for fmt, (folder, cfg, weights, load) in formats.items():
        for part, variants in ((cfg, json_variants(json.loads((folder / cfg).read_text()), fmt == "ours") if cfg else {}),
                               (weights, safetensors_variants((folder / weights).read_bytes()) if weights else {})):
            for variant, data in variants.items():
                yield f"{fmt} {part}: {variant}", folder, part, data, load
    gguf = b"GGUF" + struct.pack("<I", 3)
    for variant, data in {"magic only": b"GGUF", "version 99": b"GGUF" + struct.pack("<IQQ", 99, 0, 0),
                          "2**40 tensors": gguf + struct.pack("<QQ", 2**40, 0),
                          "metadata key 2**60 long": gguf + struct.pack("<QQQ", 0, 1, 2**60),
                          "random after the magic": b"GGUF" + os.urandom(64)}.items():
        yield f"gguf header: {variant}", root / "model.gguf", None, data, lambda path: load_model(str(path))
    yield "dictionary_learning ae.pt: a pickle that runs code", root / "dl", "ae.pt", pickle.dumps(Evil()), load_dictionary


def _synthetic_store(folder: Path):
    from interp.data.activations import CacheStore
    from interp.data.shard_cache import ShardCache

    cache = ShardCache(folder, {"model": "m", "hooks": {"x": "h"}, "gradients": {}, "source": "s", "split": "train",
                                "n_ctx": 4})
    cache.write(0, {"x": torch.randn(16, 2)})
    return CacheStore(folder, batch_size=4, mix=1)


def clear_error(load, target: Path, name: str) -> str | None:
    try:
        load(target)
    except USER_ERRORS as err:
        line = one_line(err)
        return None if name in line else f"message does not name {name}: {line[:200]}"
    except BaseException as err:  # noqa: BLE001
        return f"raised {type(err).__name__}: {str(err)[:200]}"
    return "accepted"


def test_every_format_answers_bad_files_with_one_clear_line_naming_the_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    outcomes = {}
    for case, folder, part, data, load in list(loader_cases(tmp_path / "valid")):
        target = tmp_path / "cases" / str(len(outcomes)) / folder.name
        if folder.is_dir():
            shutil.copytree(folder, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        if part is None and not folder.is_dir():
            target.write_bytes(data)
        else:
            target.mkdir(exist_ok=True)
            (target / part).write_bytes(data)
        outcomes[case] = clear_error(load, target, target.name)
    assert not Path("/tmp/interp-fuzz-pwned").exists(), "a pickle was unpickled"
    tally("files", outcomes, capsys)


# --- hostile strings in HTML ---------------------------------------------------------------------
INJECTED = ("<img id=pwned src=x onerror=\"document.documentElement.setAttribute('data-pwned', 1)\">"
            "<script>document.documentElement.setAttribute('data-pwned', 2)</script>"
            "</title></textarea></script><b id=pwned>\u202eevil\u202c \u2066x\u2069 \x1b[31m")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
HARNESS = """<html><body><pre id=out></pre><script>
for (const page of %s) {
  const frame = document.createElement("iframe");
  frame.onload = () => { const d = frame.contentDocument;
    document.getElementById("out").append(page + "\\t" + (d.documentElement.getAttribute("data-pwned") || "-") + "\\t"
      + d.querySelectorAll("#pwned").length + "\\n"); };
  frame.src = page; document.body.append(frame);
}
</script></body></html>"""


def _viz_views() -> dict:
    """tests/viz/test_hostile_strings.py's VIEWS (every template and view, given one string), imported with
    its folder on the path as pytest does, so every view the viz tests know is fuzzed here too."""
    import importlib.util
    import sys

    here = str(Path(__file__).parent / "viz")
    spec = importlib.util.spec_from_file_location("viz_hostile_strings", Path(here) / "test_hostile_strings.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, here)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(here)
    return module.VIEWS


def hostile_pages(tmp_path: Path) -> dict[str, str]:
    pages = {}
    for view, make in _viz_views().items():
        (tmp_path / view).mkdir()
        for name, page in make(INJECTED, tmp_path / view).items():
            pages[f"{view}/{name}"] = page
    return pages


def test_hostile_strings_in_every_html_view_inject_nothing(tmp_path, capsys):
    from interp.viz.text import HIDDEN

    import unicodedata

    pages = hostile_pages(tmp_path)
    files = {}
    for i, (name, page) in enumerate(pages.items()):
        files[name] = tmp_path / f"page{i}.html"
        files[name].write_text(page if "<html" in page.lower() else f"<html><body>{page}</body></html>")
    outcomes = {f"{name}: hidden characters shown raw": None if not [
        c for c in page if unicodedata.category(c) in HIDDEN - {"Cc"}] else "raw bidi/invisible characters"
        for name, page in pages.items()}
    if CHROMIUM is None:
        tally("html (no Chromium: injection not checked in a browser)", outcomes, capsys)
        pytest.skip("headless Chromium is not installed: only the text of the pages was checked")
    (tmp_path / "harness.html").write_text(HARNESS % json.dumps([p.name for p in files.values()]))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                          "--virtual-time-budget=5000", "--dump-dom", (tmp_path / "harness.html").as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    seen = {line.split("\t")[0]: line.split("\t")[1:] for line in dom.split('<pre id="out">')[-1].split("</pre>")[0].splitlines()}
    for name, path in files.items():
        result = seen.get(path.name)
        outcomes[f"{name}: injected markup"] = "page did not load" if result is None else \
            None if result == ["-", "0"] else f"data-pwned={result[0]}, {result[1]} injected elements"
    tally("html views in headless Chromium", outcomes, capsys)
