"""Prove over HTTP that N worker processes serve coherent cached data.

Usage (see docs/deploy.md)::

    python scripts/check_coherence.py --read http://127.0.0.1:8000/items/1 \\
        --write http://127.0.0.1:8000/items/1 --method PUT \\
        --body '{"price": {n}}' --workers 2 --rounds 20

against ``uvicorn tests.tier_coherence_app:app --workers 2`` (the app must keep its data
where every worker sees it; a dict per process makes every check fail).

Each round: read the URL many times until several workers have answered (a worker is
told apart by ``--worker-header``, default ``X-Worker-Pid``; without it every response
counts), so their local caches hold the current response; then send the write (``{n}``
in the body becomes the round number, so every write changes the data) through one
worker; wait ``--grace`` ms; then read ``--reads`` times. Any response equal to the one
from before the write is stale: some worker kept its old copy. Exit status 0 when no
round saw a stale response, 1 otherwise. Standard library only.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request
from collections import Counter


def fetch(
    url: str, method: str = "GET", body: str | None = None, header: str = ""
) -> tuple[str, str]:
    """Return (body text, worker id) of one request on a fresh connection."""
    data = body.encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    request.add_header("Connection", "close")  # a new connection may land on another worker
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode(errors="replace"), response.headers.get(
            header, ""
        ) if header else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--read", required=True, help="a cached GET URL")
    parser.add_argument("--write", required=True, help="a URL that changes what --read returns")
    parser.add_argument("--method", default="POST", help="method of the write (default POST)")
    parser.add_argument("--body", default=None, help="write body; {n} becomes the round number")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--reads", type=int, default=40, help="reads after each write")
    parser.add_argument("--workers", type=int, default=2, help="distinct workers to warm")
    parser.add_argument("--grace", type=float, default=50.0, help="ms allowed for propagation")
    parser.add_argument("--worker-header", default="X-Worker-Pid")
    args = parser.parse_args(argv)

    stale_rounds = 0
    seen_workers: Counter[str] = Counter()
    for n in range(1, args.rounds + 1):
        before, workers = None, set()
        for _ in range(50 * args.workers):  # warm several workers' local caches
            text, worker = fetch(args.read, header=args.worker_header)
            before = before if before is not None else text
            workers.add(worker)
            if len(workers) >= args.workers:
                break
        body = args.body.replace("{n}", str(n)) if args.body else None
        fetch(args.write, args.method, body)
        time.sleep(args.grace / 1000)
        stale = Counter()
        for _ in range(args.reads):
            text, worker = fetch(args.read, header=args.worker_header)
            seen_workers[worker] += 1
            if text == before:
                stale[worker or "?"] += 1
        if stale:
            stale_rounds += 1
            print(f"round {n}: STALE responses by worker: {dict(stale)}")
        else:
            print(f"round {n}: ok ({len(workers)} workers warmed, {args.reads} fresh reads)")
    print(
        f"workers seen: {len(seen_workers)}; rounds with stale reads: {stale_rounds}/{args.rounds}"
    )
    return 1 if stale_rounds else 0


if __name__ == "__main__":
    sys.exit(main())
