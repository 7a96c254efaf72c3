"""``python -m benchmarks SUITE [--smoke] [--rounds N] [--no-json]``."""

from benchmarks import main

raise SystemExit(main())
