"""cacheplug benchmark suites: ``python -m benchmarks SUITE`` (or ``cacheplug bench SUITE``).

A suite is a module ``benchmarks/<name>.py`` with ``run(smoke: bool = False) -> list[dict]``
that prints markdown and writes its JSON through :mod:`benchmarks._harness`. It joins the
registry below with one line. Modules are imported only when their suite runs.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from typing import Any

from benchmarks import _harness

#: suite name -> module that defines ``run(smoke: bool = False) -> list[dict]``
SUITES: dict[str, str] = {
    "core": "benchmarks.core",
    "django": "benchmarks.django",
    "freshness": "benchmarks.freshness",
    "persistence": "benchmarks.persistence",
    "runtime": "benchmarks.runtime",
    "asgi": "benchmarks.asgi",
    "flask": "benchmarks.flask",
    "redis": "benchmarks.redis",
    "metrics": "benchmarks.metrics",
}

__all__ = ["SUITES", "add_arguments", "main", "run_suites"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``SUITE``, ``--smoke``, ``--rounds N`` and ``--no-json`` to ``parser``."""
    parser.add_argument("suite", help=f"one of: {', '.join(SUITES)}, all")
    parser.add_argument(
        "--smoke", action="store_true", help="1 round, tiny loops: proves it runs, no numbers"
    )
    parser.add_argument(
        "--rounds", type=int, default=None, metavar="N", help="interleaved rounds (default 5)"
    )
    parser.add_argument(
        "--no-json", action="store_true", help="do not write benchmarks/results/*.json"
    )


def run_suites(
    suite: str, *, smoke: bool = False, rounds: int | None = None, write_json: bool = True
) -> dict[str, list[dict[str, Any]]]:
    """Run ``suite`` (or every registered suite for ``"all"``); return rows by suite.

    :raises KeyError: ``suite`` is neither registered nor ``"all"``.
    """
    names = list(SUITES) if suite == "all" else [suite]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise KeyError(f"unknown suite {unknown[0]!r}; choose from {', '.join(SUITES)}, all")
    results: dict[str, list[dict[str, Any]]] = {}
    with _harness.use_settings(smoke=smoke, rounds=rounds, write_json=write_json):
        for name in names:
            module = importlib.import_module(SUITES[name])
            results[name] = module.run(smoke=smoke)
            _harness.out()
    return results


def run_from_args(args: argparse.Namespace) -> int:
    """Run what :func:`add_arguments` parsed; exit status 0, or 2 for an unknown suite."""
    try:
        run_suites(args.suite, smoke=args.smoke, rounds=args.rounds, write_json=not args.no_json)
    except KeyError as exc:
        print(f"error: {exc.args[0]}")
        return 2
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Command line: ``SUITE [--smoke] [--rounds N] [--no-json]``."""
    parser = argparse.ArgumentParser(prog=prog, description="Run cacheplug benchmark suites.")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
