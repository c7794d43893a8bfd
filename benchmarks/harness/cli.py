"""The command line every benchmark shares: `python -m benchmarks.<name>` with its docstring as the help,
--quick and --json PATH last, a --model folder relative to the repository, and the end of `main()`: the
report printed, the results written as JSON when asked."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from benchmarks.harness.processes import REPO
from benchmarks.harness.stats import write_json

R = TypeVar("R")


def bench_parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of `python -m benchmarks.<name>`: `doc` (the script's docstring) shown as written."""
    return argparse.ArgumentParser(
        prog=f"python -m benchmarks.{name}",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_quick_and_json(parser: argparse.ArgumentParser, quick_help: str) -> None:
    """--quick (what it shortens: `quick_help`) and --json PATH, the last options of every benchmark."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON to PATH")


def model_folder(path: Path) -> Path:
    """--model: an export folder, relative to the repository unless absolute; SystemExit when missing."""
    model = (path if path.is_absolute() else REPO / path).resolve()
    if not model.exists():
        raise SystemExit(f"model not found: {model}")
    return model


def report_and_save(result: R, report: Callable[[R], None], json_path: Path | None) -> int:
    """The end of every benchmark's `main()`: print the report, write the results as JSON to --json PATH
    when given; exit status 0."""
    report(result)
    if json_path is not None:
        write_json(result, json_path)
    return 0
