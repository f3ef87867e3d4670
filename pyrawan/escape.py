"""Text from users (labels, prompts, metric names read from artifacts) escaped for each output format.

- ``markdown_text``: one line of Markdown that renders as the literal text: line breaks become spaces,
  HTML's ``& < >`` become entities, and the characters that make emphasis, links, code or table
  cells (``\\ ` * _ ~ [ ] |``) are backslash-escaped.
- ``PLOT_TEXT``: keyword arguments for matplotlib text calls that draw the string literally (no
  mathtext, no LaTeX), so a label such as ``$\\frac{$`` is drawn as typed instead of failing.
- File names made from user text: ``pyrawan.fsutil.capped_name``.
"""
from __future__ import annotations

import re

_BREAKS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_MARKDOWN = re.compile(r"([\\`*_~\[\]|])")
PLOT_TEXT = {"parse_math": False, "usetex": False}


def markdown_text(text: object) -> str:
    """``text`` as inline Markdown that shows exactly the characters given (on one line)."""
    flat = _BREAKS.sub(" ", str(text))
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN.sub(r"\\\1", flat)
