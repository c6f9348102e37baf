"""MkDocs hook: render the GitHub-style Markdown of these pages the same way with Python-Markdown.

The pages are written for GitHub as much as for the site. Python-Markdown differs in three places this hook
evens out, without extra packages: a fenced block inside a list item (indented) becomes an indented code block
of that item; lines indented by 2-3 spaces (a list item's nested items, tables and paragraphs) are indented by 4,
as Python-Markdown needs.
"""

from __future__ import annotations

import re
from typing import Any

FENCE = re.compile(r"^(\s*)(```|~~~)")
NESTED = re.compile(r"^ {2,3}(?=\S)")  # list continuation lines, nested items and tables


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Rewrite the page's Markdown before Python-Markdown sees it."""
    out: list[str] = []
    lines = markdown.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = FENCE.match(line)
        if fence and not fence.group(1):  # a top-level fence: copy it through untouched
            end = i + 1
            while end < len(lines) and not lines[end].startswith(fence.group(2)):
                end += 1
            out.extend(lines[i : end + 1])
            i = end + 1
            continue
        if fence:  # a fence inside a list item: an indented code block of that item
            indent = len(fence.group(1))
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(fence.group(2)):
                end += 1
            out.extend(" " * 8 + body[indent:] if body.strip() else "" for body in lines[i + 1 : end])
            i = end + 1
            continue
        out.append(NESTED.sub("    ", line))
        i += 1
    return "\n".join(out)
