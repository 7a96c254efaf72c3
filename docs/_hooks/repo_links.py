"""MkDocs hook: links from a docs page to a file outside ``docs/`` (``../README.md``).

Such links work on GitHub, but the site has no page for them, and ``mkdocs build
--strict`` fails on them. This hook renders each one whose target exists as its text
plus the repository path (``the README (`README.md`)``), so the page reads the same and
the build passes; a link to a file that does not exist is left alone, so the strict
build still reports it. Code blocks are not touched.
"""

from __future__ import annotations

import os
import re
from typing import Any

_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)
_LINK = re.compile(r"(?<!!)\[([^\]\n]+)\]\((\.\./[^)\s#]+)(#[^)\s]*)?\)")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Rewrite the page's links that leave ``docs_dir`` (called by MkDocs per page)."""
    docs_dir = os.path.abspath(config["docs_dir"])
    root = os.path.dirname(docs_dir)
    page_dir = os.path.dirname(os.path.join(docs_dir, page.file.src_path))

    def replace(match: re.Match[str]) -> str:
        target = os.path.normpath(os.path.join(page_dir, match.group(2)))
        if target.startswith(docs_dir + os.sep) or not os.path.exists(target):
            return match.group(0)
        return f"{match.group(1)} (`{os.path.relpath(target, root)}`)"

    # Even-numbered pieces are outside code fences.
    pieces = _FENCE.split(markdown)
    out, inside = [], False
    for piece in pieces:
        if _FENCE.fullmatch(piece):
            inside = not inside
            out.append(piece)
        else:
            out.append(piece if inside else _LINK.sub(replace, piece))
    return "".join(out)
