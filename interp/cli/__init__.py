"""The `interp` command line: a thin layer over the Python API.

Each command lives in its own module of this package (`NAME`, `HELP`,
`add_arguments(parser)`, `run(args) -> exit code`) and imports the library
lazily, so `interp --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["train", "eval", "darkmatter", "lib", "features", "circuit", "steer"]


def add_source_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared by commands that read text and run a model."""
    p.add_argument("--source", default="shakespeare", help="text: 'shakespeare' (embedded), a local .txt/.jsonl/.parquet/.arrow "
                   "file or folder, or a hub dataset name[:config]")
    p.add_argument("--text-column", default="text", help="column holding the text in dataset files")
    p.add_argument("--n-ctx", type=int, default=128, help="tokens per context (first is BOS)")
    p.add_argument("--eval-contexts", type=int, default=64, help="held-out contexts used for metrics")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="model dtype")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interp", description="Sparse dictionaries and circuits on TransformerLens models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"interp.cli.{name}_command")
        p = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(command_function=module.run)  # not `run`: a command may have a positional named run
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.command_function(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI turns known failures into one clear line
        from interp.training.checkpoint import TrainingInterrupted

        if isinstance(err, TrainingInterrupted):
            print(str(err), file=sys.stderr)
            return 130
        from interp.errors import USER_ERRORS, one_line

        if isinstance(err, USER_ERRORS):  # UserError and the ValueError / missing-file family: one line, exit 2
            print(one_line(err), file=sys.stderr)
            return 2
        raise  # anything else is a bug: keep its traceback


def headline(folder) -> dict:
    """The few metrics worth printing after a run."""
    from interp.training.runs import read_metrics

    m = read_metrics(folder)
    return {k: round(m[k], 4) for k in ("l0", "fvu", "ce_recovered", "kl_spliced", "dead_fraction")}
