"""Prompts files: UTF-8 text, one prompt per line.

A file splits only at ``\\n`` (a ``\\r\\n`` ending counts as one); blank lines are skipped and each
prompt is stripped of surrounding spaces and tabs. Python's ``str.splitlines`` also splits at
``\\v``, ``\\f``, U+0085, U+2028 and U+2029, which would silently turn one prompt into two; such
characters (and other control characters) inside a line are refused, naming the line.
"""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from pyrawan.errors import InputError

# Control characters and Unicode line/paragraph separators; a tab is fine inside a prompt.
_FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def split_prompts(text: str, source: str) -> list[str]:
    """The prompts of a prompts file's ``text``; ``source`` names it in errors."""
    prompts = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        bad = _FORBIDDEN.search(line)
        if bad:
            char = bad.group()
            name = unicodedata.name(char, "a control character")
            raise InputError(f"{source} line {number}: holds U+{ord(char):04X} ({name}) at column {bad.start() + 1}; "
                             f"a prompts file has one prompt per line and splits only at \\n, so this character "
                             f"would hide a line break inside a prompt. Remove it or replace it with a space.")
        if line.strip(" \t"):
            prompts.append(line.strip(" \t"))
    return prompts


def read_prompt_file(path: Path, flag: str = "--prompts", required: bool = False) -> list[str]:
    """The prompts of a UTF-8 prompts file (``flag`` names the option in errors); ``required``: at least one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{flag} {path}: cannot read it ({err}); give a UTF-8 text file with one prompt per "
                         f"line.") from None
    prompts = split_prompts(text, f"{flag} {path}")
    if required and not prompts:
        raise InputError(f"{flag} {path} holds no prompt; write one prompt per line.")
    return prompts
