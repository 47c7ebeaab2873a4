"""Reads the README's quickstart as a script: its code blocks, the files they make, their output.

The quickstart section (from ``## Quickstart`` to the next ``## `` heading) is run as written:

- a ``sh`` block runs in bash from the repository root (stopping at the first failing command);
- a ``python`` or ``ts`` block whose first line is a comment naming a file (``# hello-agent/x.py``,
  ``// hello-agent/x.mts``) is written to that file, for a later ``sh`` block to run;
- a ``text`` block right after a ``sh`` block is the output that block shows: each of its lines
  must appear in the block's output (stdout and stderr together), in order, where ``...`` stands
  for any text within a line.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.MULTILINE | re.DOTALL)
FILE_COMMENT = re.compile(r"^(?:#|//)\s*(\S+\.(?:py|mts|ts))\s*$")


@dataclasses.dataclass
class Block:
    """One fenced block of the quickstart."""

    language: str
    text: str
    file: str = ""
    """For code to save: the path its first line names."""
    expected_output: str = ""
    """For a sh block: the text block that follows it."""


def quickstart_section(readme: str) -> str:
    """Return the text of the Quickstart section."""
    start = readme.index("\n## Quickstart\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else len(readme)]


def quickstart_blocks(readme: str) -> list[Block]:
    """Return the quickstart's blocks in order, outputs attached to the sh block they follow."""
    section = quickstart_section(readme)
    blocks: list[Block] = []
    last_end = 0
    for match in FENCE.finditer(section):
        language, text = match.group(1), match.group(2)
        between = section[last_end : match.start()]
        last_end = match.end()
        if language == "text":
            if not blocks or blocks[-1].language != "sh" or between.strip():
                raise ValueError(f"a text block must follow a sh block directly:\n{text}")
            blocks[-1].expected_output = text
            continue
        block = Block(language, text)
        first_line = text.split("\n", 1)[0]
        if language in ("python", "ts") and (named := FILE_COMMENT.match(first_line)):
            block.file = named.group(1)
        blocks.append(block)
    return blocks


def _line_pattern(expected: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in expected.strip().split("...")]
    return re.compile(".*".join(parts))


def output_mismatch(expected: str, actual: str) -> str | None:
    """Return the first expected line not found (in order) in ``actual``, or None if all are."""
    actual_lines = [line.strip() for line in actual.splitlines()]
    position = 0
    for line in expected.splitlines():
        if not line.strip():
            continue
        pattern = _line_pattern(line)
        while position < len(actual_lines) and not pattern.fullmatch(actual_lines[position]):
            position += 1
        if position == len(actual_lines):
            return line
        position += 1
    return None


def save_file(block: Block, root: Path) -> Path:
    """Write a code block to the file its first line names, under ``root``."""
    path = root / block.file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.text)
    return path
