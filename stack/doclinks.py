"""Every relative link and anchor in the repository's Markdown files resolves, as GitHub renders them.

    python -m stack.doclinks      # prints file:line: link: reason for each broken link; exits 1 if any

The files checked are the `*.md` files git tracks. A link's file or folder must be tracked too: one
that exists only in a checkout (generated, ignored) is broken on GitHub and in a fresh clone. An
anchor must name a heading of the target page by GitHub's rules. External links (http, https,
mailto) are not followed. Headings and links inside fenced code blocks and inline code do not count;
indented code blocks are read as text (a list's continued lines look the same).
"""

from __future__ import annotations

import argparse
import posixpath
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stack.settings import ROOT

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)[ \t]*$")
# A line that cannot be the text of a setext heading: a list item, quote, table row or HTML.
_NOT_PARAGRAPH = re.compile(r"^ {0,3}(?:[-+*](?:\s|$)|\d+[.)](?:\s|$)|[>|<])|\|")
_HTML_ANCHOR = re.compile(r"<a\s[^>]*?\b(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)")
# The destination of an inline link or image: `](dest)`, `](dest "title")`, `](<dest with spaces>)`.
_INLINE_LINK = re.compile(r"\]\(\s*(<[^>\n]*>|[^)\s]+)")
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>\n]*>|\S+)")
_LINK_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_HTML_TAG = re.compile(r"<[^>]+>")
# GitHub keeps letters, digits, `_`, `-` and spaces (which become `-`); everything else goes.
_NOT_SLUG = re.compile(r"[^\w\- ]", re.UNICODE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Link:
    line: int
    target: str


@dataclass(frozen=True)
class Page:
    anchors: frozenset[str]
    links: tuple[Link, ...]


@dataclass(frozen=True)
class Broken:
    file: str
    line: int
    link: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.link}: {self.reason}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (github-slugger), before duplicates are numbered."""
    text = _LINK_TEXT.sub(r"\1", heading)  # a link in a heading anchors by its text
    text = _HTML_TAG.sub("", text)
    return _NOT_SLUG.sub("", text.strip().lower()).replace(" ", "-")


class Slugger:
    """Numbers repeated headings as GitHub does: `a`, `a-1`, `a-2`, never reusing an earlier slug."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def __call__(self, heading: str) -> str:
        original = result = slug(heading)
        while result in self._seen:
            self._seen[original] += 1
            result = f"{original}-{self._seen[original]}"
        self._seen[result] = 0
        return result


def outside_fences(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks, fences included."""
    fence = ""
    for number, line in enumerate(lines, 1):
        marker = _FENCE.match(line)
        if fence:
            if marker and _closes(marker, fence):
                fence = ""
            continue
        # A backtick fence's info string may not hold a backtick: "```a`b```" is inline code.
        if marker and not (marker[1][0] == "`" and "`" in marker[2]):
            fence = marker[1]
            continue
        yield number, line


def _closes(marker: re.Match[str], fence: str) -> bool:
    """A fence closes with the same character, at least as many of them, and nothing after."""
    return marker[1][0] == fence[0] and len(marker[1]) >= len(fence) and not marker[2].strip()


def parse(text: str) -> Page:
    """The anchors a page offers and the links it makes."""
    anchors: list[str] = []
    links: list[Link] = []
    new_anchor = Slugger()
    previous = ""  # the previous line outside fences, "" after a blank line or a fence
    previous_number = 0
    for number, line in outside_fences(text.splitlines()):
        if previous_number != number - 1:
            previous = ""  # a fence came between: it ends any paragraph
        previous_number = number
        heading = _ATX_HEADING.match(line)
        if heading:
            anchors.append(new_anchor(heading[1] or ""))
        elif _SETEXT_UNDERLINE.match(line) and previous.strip() and not _NOT_PARAGRAPH.match(previous):
            anchors.append(new_anchor(previous))
        anchors.extend(_HTML_ANCHOR.findall(line))
        links.extend(Link(number, target) for target in link_targets(line))
        previous = "" if heading else line
    return Page(frozenset(anchors), tuple(links))


def link_targets(line: str) -> list[str]:
    """The destinations of the links on a line, inline code left out."""
    prose = _CODE_SPAN.sub("", line)
    found = [match.strip("<>") for match in _INLINE_LINK.findall(prose)]
    definition = _REFERENCE_DEFINITION.match(prose)
    if definition:
        found.append(definition[1].strip("<>"))
    return found


class Checker:
    """Checks links against a tree of files (paths relative to its root, `/`-separated)."""

    def __init__(self, root: Path, files: Iterable[str]) -> None:
        self.root = root
        self.files = frozenset(files)
        self.folders = frozenset(folder for path in self.files for folder in _folders(path)) | {"."}
        self._pages: dict[str, Page] = {}

    def markdown(self) -> list[str]:
        return sorted(
            path for path in self.files if path.endswith(".md") and "node_modules" not in path.split("/")
        )

    def page(self, path: str) -> Page:
        if path not in self._pages:
            self._pages[path] = parse((self.root / path).read_text(encoding="utf-8"))
        return self._pages[path]

    def check(self) -> list[Broken]:
        broken = []
        for path in self.markdown():
            for link in self.page(path).links:
                reason = self.problem(path, link.target)
                if reason:
                    broken.append(Broken(path, link.line, link.target, reason))
        return broken

    def problem(self, source: str, target: str) -> str | None:
        """Why a link from `source` does not resolve; None when it does or is not ours to check."""
        if _SCHEME.match(target) or target.startswith("//"):
            return None  # external: not followed
        path, _, fragment = target.partition("#")
        path = urllib.parse.unquote(path.partition("?")[0])
        if not path:
            return self.anchor_problem(source, fragment)
        resolved = resolve(source, path)
        if resolved == ".." or resolved.startswith("../"):
            return "outside the repository"
        if resolved not in self.files and resolved not in self.folders:
            on_disk = (self.root / resolved).exists()
            return "not in git (exists only in this checkout)" if on_disk else "no such file or folder"
        if fragment and resolved in self.files and resolved.endswith(".md"):
            return self.anchor_problem(resolved, fragment)
        return None  # anchors into other files (a line of code, a folder's README) are not checked

    def anchor_problem(self, page: str, fragment: str) -> str | None:
        anchor = urllib.parse.unquote(fragment)
        if not anchor or anchor in self.page(page).anchors:
            return None
        return f"no heading with the anchor #{anchor} in {page}"


def resolve(source: str, path: str) -> str:
    """A link's path from the repository's root: GitHub reads a leading `/` from the root, any
    other path from the linking page's folder."""
    joined = path[1:] if path.startswith("/") else posixpath.join(posixpath.dirname(source), path)
    return posixpath.normpath(joined)


def _folders(path: str) -> Iterator[str]:
    """Every folder a file is in: `a/b/c.md` is in `a/b` and `a`."""
    folder = posixpath.dirname(path)
    while folder:
        yield folder
        folder = posixpath.dirname(folder)


def tracked_files(root: Path) -> list[str]:
    """Every file git tracks under `root` that is still there (a deletion not yet staged is gone)."""
    listing = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z"], check=True, capture_output=True, text=True
    ).stdout
    return [path for path in listing.split("\0") if path and (root / path).exists()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.doclinks", description=__doc__.split("\n")[0])
    parser.parse_args(argv)
    checker = Checker(ROOT, tracked_files(ROOT))
    broken = checker.check()
    for problem in broken:
        print(problem)
    if broken:
        print(f"{len(broken)} broken link(s)", file=sys.stderr)
        return 1
    print(f"{len(checker.markdown())} Markdown files: every relative link and anchor resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
