"""The one exception class for bad input, and the rule the command line applies to it.

`UserError` is raised where input enters (a flag, a config, a file, a folder)
with a message that names the input, says what was wrong and what to do. It
subclasses ValueError, so code that catches ValueError keeps working. The
`interp` command prints a UserError (and the ValueError / file-not-found
family) as one line and exits 2; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import os


class UserError(ValueError):
    """Bad input from the user: the message names it, says what was expected and what to do."""


# What the command line reports as one line (exit 2) instead of a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
               ModuleNotFoundError, FloatingPointError)


def one_line(err: BaseException) -> str:
    """`error: <message>` on one line (the lines of a longer message joined)."""
    text = str(err).strip() or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return "error: " + " ".join(line.strip() for line in text.splitlines() if line.strip())


def check_memory(n_bytes: int, what: str, fix: str) -> None:
    """Fail before allocating `n_bytes` when they exceed the machine's memory (Linux; elsewhere no check)."""
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if n_bytes > available:
        raise UserError(f"{what} needs {n_bytes / 2**30:.1f} GiB, more than this machine's {available / 2**30:.1f} GiB "
                        f"of memory; {fix}.")


def at_least(args, **minimums: float) -> None:
    """Fail on the first command-line flag below its minimum, before any work: at_least(args, top=1, features=0)
    checks --top >= 1 and --features >= 0 (flags left at None are not checked)."""
    for name, low in minimums.items():
        value = getattr(args, name)
        if value is not None and not value >= low:
            raise UserError(f"--{name.replace('_', '-')} {value}: expected at least {low}.")


def writable_folder(path) -> None:
    """Fail before any work when the folder `path` (an --out to write into) cannot be created or written."""
    import tempfile
    from pathlib import Path

    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UserError(f"Cannot write to {path} ({err.strerror or err}); choose a writable --out.") from None
