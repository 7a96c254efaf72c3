"""The ``cacheplug`` command.

Each subcommand is one function decorated with :func:`command`; the decorator records
its name, help and arguments, and :func:`main` builds the argparse parser from them::

    @command("inspect", "show a persistence file", Arg("path"))
    def inspect(args: argparse.Namespace) -> int: ...

Subcommands import what they need inside the function, so ``cacheplug --help`` stays
fast and imports no framework.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["Arg", "command", "main"]

Handler = Callable[[argparse.Namespace], int]


class Arg:
    """One ``parser.add_argument(*flags, **options)`` call, recorded for later."""

    def __init__(self, *flags: str, **options: Any) -> None:
        self.flags = flags
        self.options = options


@dataclass(frozen=True)
class _Command:
    name: str
    help: str
    args: tuple[Arg, ...]
    handler: Handler


_COMMANDS: dict[str, _Command] = {}


def command(name: str, help: str, *args: Arg) -> Callable[[Handler], Handler]:
    """Register the decorated ``handler(args) -> exit status`` as subcommand ``name``."""

    def register(handler: Handler) -> Handler:
        _COMMANDS[name] = _Command(name, help, args, handler)
        return handler

    return register


def build_parser() -> argparse.ArgumentParser:
    """The ``cacheplug`` parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(
        prog="cacheplug", description="cacheplug: in-process caching for Django, Flask, ASGI."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in _COMMANDS.values():
        sub = subparsers.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for arg in cmd.args:
            sub.add_argument(*arg.flags, **arg.options)
        sub.set_defaults(handler=cmd.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cacheplug`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return handler(args)


# -- bench ---------------------------------------------------------------------------------

CHECKOUT_HINT = (
    "cacheplug bench needs the benchmarks/ folder of a cacheplug source checkout, which "
    "is not installed with the package. Run it from a checkout:\n"
    "  git clone <cacheplug repository> && cd cacheplug && pip install -e '.[dev]'\n"
    "  cacheplug bench core   # or: python -m benchmarks core"
)


def _import_benchmarks() -> ModuleType | None:
    """Import the ``benchmarks`` package of the source checkout this cacheplug lives in.

    An editable install runs ``cacheplug/`` from the checkout, whose root (the parent of
    the package folder) also holds ``benchmarks/``; that root goes first on ``sys.path``.
    :returns: the module, or None when there is no checkout to import it from.
    """
    root = Path(__file__).resolve().parent.parent
    if (root / "benchmarks" / "__init__.py").is_file() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        return importlib.import_module("benchmarks")
    except ImportError:
        return None


@command(
    "bench",
    "run a benchmark suite (same as `python -m benchmarks SUITE`; needs a source checkout)",
    Arg("suite", help="suite name (core, ...) or all"),
    Arg("--smoke", action="store_true", help="1 round, tiny loops: proves it runs"),
    Arg("--rounds", type=int, default=None, metavar="N", help="interleaved rounds (default 5)"),
    Arg("--no-json", action="store_true", help="do not write benchmarks/results/*.json"),
)
def bench(args: argparse.Namespace) -> int:
    """Run the benchmark suite ``args.suite``; exit 2 if it is unknown, 1 without a checkout."""
    benchmarks = _import_benchmarks()
    if benchmarks is None or not hasattr(benchmarks, "run_from_args"):
        print(CHECKOUT_HINT, file=sys.stderr)
        return 1
    return int(benchmarks.run_from_args(args))


@command(
    "inspect",
    "describe a snapshot file or state directory: header, signature, entries, expiry, prefixes",
    Arg("path", help="a snapshot file or a state directory"),
    Arg("--keys", metavar="PATTERN", default=None, help="list keys matching this glob"),
    Arg("--limit", type=int, default=20, metavar="N", help="most keys and prefixes to list"),
    Arg("--secret", default=None, help="signing secret (default: $CACHEPLUG_SECRET)"),
)
def inspect(args: argparse.Namespace) -> int:
    """Print what a state file holds; exit 1 if it is missing, foreign or does not verify.

    While a snapshot decodes, a ``\\r`` progress bar runs on stderr if it is a terminal.
    """
    from cacheplug._progress import TerminalProgress
    from cacheplug.persistence import inspect_state

    bar = TerminalProgress(f"decoding {Path(args.path).name}", sys.stderr)
    try:
        report = inspect_state(
            args.path, secret=args.secret, pattern=args.keys, limit=args.limit, progress=bar
        )
    finally:
        bar.close()
    print(report.format())
    return 0 if report.ok else 1


@command(
    "demo",
    "serve the example FastAPI shop on the embedded cache (no Redis needed); Ctrl-C saves",
    Arg("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)"),
    Arg("--port", type=int, default=8000, help="port (default 8000)"),
    Arg("--state-dir", default="./.cacheplug", help="where state is saved (default ./.cacheplug)"),
)
def demo(args: argparse.Namespace) -> int:
    """Run the demo shop until interrupted; exit 1 without a checkout or its extras."""
    from cacheplug.demo import run_demo

    return run_demo(args.host, args.port, Path(args.state_dir))


if __name__ == "__main__":
    raise SystemExit(main())
