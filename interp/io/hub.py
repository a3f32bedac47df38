"""Resolving a dictionary source to local files: a local folder or file as is, or a Hugging Face hub repo
id ("google/gemma-scope-2b-pt-res") through `huggingface_hub.snapshot_download`, restricted to the files
a reader needs. HF_HUB_OFFLINE, HF_HOME and HF_HUB_CACHE are read when called (not when imported), so an
existing cache is used as is and, offline, nothing is fetched."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TRUE = ("1", "ON", "YES", "TRUE")


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in TRUE


def cache_dir() -> Path:
    """Where huggingface_hub keeps repos: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"


def is_repo_id(source: str) -> bool:
    return bool(REPO_ID.match(source)) and not Path(source).exists()


def resolve(source: str | Path, subfolder: str | None, patterns: list[str], revision: str | None = None) -> Path:
    """A local path for `source` (+ `subfolder`); hub repos are downloaded (or found in the cache) for
    the files matching `patterns` (relative to the subfolder) only."""
    path = Path(source)
    if path.exists():
        out = path / subfolder if subfolder else path
        if not out.exists():
            raise FileNotFoundError(f"{out} not found (subfolder {subfolder!r} of {path}).")
        return out
    if not is_repo_id(str(source)):
        raise FileNotFoundError(f"{source} is neither a local file or folder nor a hub repo id like 'owner/name'.")
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    try:
        root = download(str(source), [prefix + p for p in patterns], revision)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"no local path {source} ({Path(source).resolve()}); as a {err}") from None
    out = root / subfolder if subfolder else root
    if not out.exists():
        raise FileNotFoundError(f"hub repo {source} has no folder {subfolder!r} with any of {patterns}"
                                f"{' in the local cache (HF_HUB_OFFLINE is set)' if offline() else ''}.")
    return out


def download(repo_id: str, allow_patterns: list[str], revision: str | None = None) -> Path:
    """snapshot_download of the matching files, honouring HF_HUB_OFFLINE and the cache location; one clear
    FileNotFoundError naming the repo and the files when they cannot be had."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow_patterns, cache_dir=cache_dir(),
                                      local_files_only=offline()))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise FileNotFoundError(
            f"hub repo {repo_id} (files {allow_patterns}) is not in the local cache {cache_dir()} and "
            f"{'HF_HUB_OFFLINE is set' if offline() else 'the hub cannot be reached'}: download it once online, point "
            f"HF_HOME at a cache that has it, or pass a local folder ({type(err).__name__}).") from None
    except HFValidationError as err:
        raise ValueError(f"{repo_id!r} is not a valid hub repo id: {err}") from None
    except (HfHubHTTPError, OSError) as err:
        raise FileNotFoundError(f"hub repo {repo_id} (files {allow_patterns}) could not be fetched: {err}") from None


def resolve_uri(uri: str, base: Path | None = None) -> Path:
    """A local path for circuit-tracer's file references: "hf://owner/repo/path/file?revision=R" or a path
    (relative paths are tried beside `base` first)."""
    if uri.startswith("hf://"):
        parsed = urlparse(uri)
        parts = (parsed.netloc + parsed.path).split("/")
        if len(parts) < 3:
            raise ValueError(f"{uri!r}: expected hf://owner/repo/path/to/file.")
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
        revision = parse_qs(parsed.query).get("revision", [None])[0]
        file = download(repo_id, [filename], revision) / filename
        if not file.is_file():
            raise FileNotFoundError(f"hub repo {repo_id} has no file {filename!r}"
                                    f"{' in the local cache (HF_HUB_OFFLINE is set)' if offline() else ''}.")
        return file
    path = Path(uri)
    if not path.is_absolute() and base is not None and (base / path).exists():
        return base / path
    if not path.exists():
        raise FileNotFoundError(f"{uri} not found{f' (nor beside {base})' if base else ''}.")
    return path
