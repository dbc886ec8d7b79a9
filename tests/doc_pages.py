"""The user's documentation as tests read it: the README and the reference pages under docs/, their
fenced blocks, and the shell commands those blocks show."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHELL_LANGS = ("bash", "sh", "shell", "console")
_FENCE = re.compile(r"^```(\S*)\s*$")


def doc_files() -> list[Path]:
    """README.md first, then every page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def doc_text() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in doc_files())


def page(name: str) -> str:
    return (REPO / name).read_text(encoding="utf-8")


def section(name: str, heading: str) -> str:
    """The text of ``name`` from the line ``heading`` (a whole heading line, e.g. ``## Profiles``) to
    the next heading of the same or a higher level."""
    text = page(name)
    level = len(heading) - len(heading.lstrip("#"))
    match = re.search(rf"^{re.escape(heading)}\s*$", text, flags=re.M)
    assert match, f"{name}: no heading {heading!r}"
    rest = text[match.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, flags=re.M)
    return rest[:end.start()] if end else rest


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    lines: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    blocks, current, start, lang = [], None, 0, ""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = _FENCE.match(line.strip())
        if current is None:
            if fence:
                current, start, lang = [], number, fence.group(1)
        elif line.strip() == "```":
            blocks.append(Block(path, start, lang, tuple(current)))
            current = None
        else:
            current.append(line)
    assert current is None, f"{path.relative_to(REPO)}:{start}: a fenced block is never closed"
    return blocks


def sql_queries(text: str) -> list[str]:
    """The queries of every ```sql block of ``text``, one per statement."""
    queries = []
    for block in re.findall(r"```sql\n(.*?)```", text, flags=re.S):
        queries += [q.strip() for q in block.split(";") if q.strip()]
    return queries


@dataclass(frozen=True)
class Command:
    where: str  # file:line of its first line
    text: str  # as written, continuation lines joined

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    @property
    def key(self) -> str:
        """The command with comments and spacing normalized: what the registry of the test names."""
        return shlex.join(self.argv)


def shell_commands() -> list[Command]:
    """Every command of the fenced shell blocks of the documentation. A command runs over several
    lines while a quote is open or a line ends with a backslash; a ``$ `` prompt is dropped."""
    out = []
    for path in doc_files():
        for block in fenced_blocks(path):
            if block.lang not in SHELL_LANGS:
                continue
            pending, first = "", 0
            for offset, line in enumerate(block.lines, 1):
                if not pending:
                    if not line.strip() or line.lstrip().startswith("#"):
                        continue
                    line = line.lstrip().removeprefix("$ ")
                    first = block.line + offset
                pending = f"{pending}\n{line}" if pending else line
                if pending.endswith("\\"):
                    continue
                try:
                    shlex.split(pending, comments=True)
                except ValueError:  # a quote still open: the command goes on
                    continue
                out.append(Command(f"{path.relative_to(REPO)}:{first}", pending))
                pending = ""
            assert not pending, f"{block.where}: unterminated command {pending!r}"
    return out
