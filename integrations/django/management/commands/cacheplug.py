"""``python manage.py cacheplug stats|save|load|inspect|clear [--alias NAME]``.

A management command runs in its own process, apart from the servers. It never keeps
the state lock: ``save`` and ``clear`` take it only for their own few milliseconds and
refuse (exit status 1) while a running server holds it; ``stats``, ``load`` and
``inspect`` only read. Called in a process whose plug is running (``call_command`` in a
server, a shell after ``start_all()``), they act on that live plug instead.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.core.cache import caches
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cacheplug import CachePlug

from ...lifecycle import cacheplug_aliases, plugs
from ...options import default_secret, parse

ACTIONS = ("stats", "save", "load", "inspect", "clear")


class Command(BaseCommand):
    help = "Show, save, load, inspect or clear the state of CachePlugCache aliases."
    requires_system_checks: ClassVar[list[str]] = []  # works even when a check fails

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("action", choices=ACTIONS)
        parser.add_argument(
            "--alias", default=None, help="a CACHES alias (default: every CachePlugCache one)"
        )
        parser.add_argument("--keys", default=None, metavar="GLOB", help="inspect: list keys")
        parser.add_argument("--limit", type=int, default=20, help="inspect: most keys listed")

    def handle(self, *args: Any, **options: Any) -> None:
        aliases = cacheplug_aliases()
        if options["alias"] is not None:
            if options["alias"] not in aliases:
                raise CommandError(
                    f"{options['alias']!r} is not a CachePlugCache alias; choose from {aliases}"
                )
            aliases = [options["alias"]]
        if not aliases:
            raise CommandError("no CACHES alias uses cacheplug.integrations.django.CachePlugCache")
        seen: set[str] = set()
        failed = []
        for alias in aliases:
            location = settings.CACHES[alias].get("LOCATION", "")
            if location in seen:
                continue  # one store per LOCATION: act once
            seen.add(location)
            try:
                getattr(self, f"_{options['action']}")(alias, location, options)
            except CommandError as exc:
                self.stderr.write(f"{alias}: {exc}")
                failed.append(alias)
        if failed:
            raise CommandError(f"{options['action']} failed for {failed}")

    # -- helpers -------------------------------------------------------------------------

    def _plug_options(self, alias: str, location: str) -> dict[str, Any]:
        secret_key = default_secret()
        return parse(location, settings.CACHES[alias], secret_key).plug_options

    def _live(self, location: str) -> CachePlug | None:
        plug = plugs().get(location)
        return plug if plug is not None and plug.started else None

    def _state_dir(self, alias: str, location: str) -> str:
        state_dir = self._plug_options(alias, location).get("state_dir")
        if state_dir is None:
            raise CommandError("persistence is off (no OPTIONS['STATE_DIR'])")
        return state_dir

    def _borrow(self, alias: str, location: str) -> CachePlug:
        """Open a short-lived plug on the state dir as its writer, or refuse."""
        self._state_dir(alias, location)
        plug = CachePlug(**{**self._plug_options(alias, location), "sweep_interval": 0})
        plug.start()
        persistence = plug.stats().persistence
        if persistence is None or not persistence.is_writer:
            plug.close()
            raise CommandError(
                "another process (a running server) holds the state lock; it saves on exit. "
                "Run this while the servers are stopped, or from inside one with call_command"
            )
        return plug

    # -- actions -------------------------------------------------------------------------

    def _stats(self, alias: str, location: str, options: dict[str, Any]) -> None:
        live = self._live(location)
        self.stdout.write(f"{alias} (LOCATION {location!r}):")
        if live is not None:
            stats = live.stats()
            c = stats.cache
            self.stdout.write(
                f"  live: {c.size} entries, {c.hits} hits, {c.misses} misses, {c.sets} sets, "
                f"{c.evictions} evictions, {c.expirations} expirations; "
                f"worker queue {stats.worker.queue_depth}"
            )
        state_dir = self._plug_options(alias, location).get("state_dir")
        if state_dir is None:
            self.stdout.write("  persistence: off")
            return
        self.stdout.write(f"  persistence: {state_dir}")
        self._inspect(alias, location, {**options, "keys": None, "indent": True})

    def _inspect(self, alias: str, location: str, options: dict[str, Any]) -> None:
        from cacheplug.persistence import inspect_state

        state_dir = self._state_dir(alias, location)
        secret = self._plug_options(alias, location).get("secret")
        report = inspect_state(
            state_dir, secret=secret, pattern=options.get("keys"), limit=options.get("limit", 20)
        )
        text = report.format()
        if options.get("indent"):
            text = "\n".join(f"  {line}" for line in text.splitlines())
        self.stdout.write(text)

    def _load(self, alias: str, location: str, options: dict[str, Any]) -> None:
        from cacheplug.persistence import StateStore

        live = self._live(location)
        if live is not None:
            self.stdout.write(f"{alias}: loaded {live.loaded_entries} entries at start")
            return
        plug_options = self._plug_options(alias, location)
        state_dir = self._state_dir(alias, location)
        # A reader: never takes the lock, so a running server is not disturbed.
        with StateStore(state_dir, secret=plug_options.get("secret")) as store:
            result = store.load()
        for warning in result.warnings:
            self.stderr.write(f"{alias}: {warning}")
        self.stdout.write(
            f"{alias}: {len(result.entries)} live entries load from {state_dir} "
            f"({result.replayed} log records replayed, {result.skipped_expired} expired)"
        )

    def _save(self, alias: str, location: str, options: dict[str, Any]) -> None:
        live = self._live(location)
        plug = live if live is not None else self._borrow(alias, location)
        try:
            info = plug.save()
        finally:
            if live is None:
                plug.close()
        entries = info.entries if info is not None else 0
        self.stdout.write(f"{alias}: saved {entries} entries")

    def _clear(self, alias: str, location: str, options: dict[str, Any]) -> None:
        live = self._live(location)
        if live is None and self._plug_options(alias, location).get("state_dir") is None:
            caches[alias].clear()  # nothing saved: only this process's memory
            self.stdout.write(f"{alias}: cleared")
            return
        plug = live if live is not None else self._borrow(alias, location)
        try:
            plug.cache.clear()
            plug.save()
        finally:
            if live is None:
                plug.close()
        self.stdout.write(f"{alias}: cleared (memory and saved state)")
