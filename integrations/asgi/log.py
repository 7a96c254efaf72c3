"""A :class:`logging.Filter` that stamps every record with the current request id."""

from __future__ import annotations

import logging

from cacheplug.context import request_context

__all__ = ("RequestIdFilter",)


class RequestIdFilter(logging.Filter):
    """Add ``record.request_id``: the request-context id, or ``default`` outside a request.

    Attach it to a handler and use ``%(request_id)s`` in the format. The id is the one
    :class:`~cacheplug.integrations.asgi.CachePlugMiddleware` put in the request context
    (an honoured ``X-Request-ID`` or a generated one), so every line a request logs, in
    any task or thread that inherits its context, carries the same id. Never filters out.

    :param default: the value for records logged outside any request.
    """

    def __init__(self, name: str = "", default: str = "-") -> None:
        super().__init__(name)
        self.default = default

    def filter(self, record: logging.LogRecord) -> bool:
        """Set ``record.request_id`` (unless the record already has one); keep the record."""
        if not hasattr(record, "request_id"):
            rid = request_context.request_id if request_context.active else None
            record.request_id = rid if rid is not None else self.default
        return True
