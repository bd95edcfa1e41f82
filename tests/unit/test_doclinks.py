"""Every relative link and anchor in the Markdown files resolves (`make check-docs`), and the checker
catches what GitHub would render as a broken link and nothing else."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stack import doclinks
from stack.doclinks import ROOT, Broken, Checker, slug, tracked_files


def check(root: Path, pages: dict[str, str]) -> list[Broken]:
    """Writes the pages under `root` and checks them as if every file there were tracked."""
    for name, text in pages.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    files = [path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()]
    return Checker(root, files).check()


def test_the_repositorys_markdown_has_no_broken_link() -> None:
    checker = Checker(ROOT, tracked_files(ROOT))
    assert "README.md" in checker.markdown()
    assert [str(problem) for problem in checker.check()] == []


def test_a_link_to_a_missing_file_is_reported_with_its_line(tmp_path: Path) -> None:
    broken = check(tmp_path, {"README.md": "# Top\n\nSee [the guide](docs/guide.md).\n"})
    assert [str(problem) for problem in broken] == ["README.md:3: docs/guide.md: no such file or folder"]


def test_links_to_files_and_folders_that_exist_pass(tmp_path: Path) -> None:
    pages = {
        "README.md": "[guide](docs/guide.md), [docs](docs/), [code](src/main.py#L3), [up](./README.md)\n",
        "docs/guide.md": "# Guide\n\n[back](../README.md) [root](/README.md)\n",
        "src/main.py": "print()\n",
    }
    assert check(tmp_path, pages) == []


def test_a_link_outside_the_repository_is_reported(tmp_path: Path) -> None:
    broken = check(tmp_path, {"README.md": "[elsewhere](../other/README.md)\n"})
    assert [problem.reason for problem in broken] == ["outside the repository"]


def test_a_broken_anchor_is_reported_on_the_page_and_across_pages(tmp_path: Path) -> None:
    pages = {
        "README.md": "# Top\n\n## Setup\n\n[here](#set-up) and [there](docs/guide.md#usage)\n",
        "docs/guide.md": "# Guide\n\n## Use\n",
    }
    assert [str(problem) for problem in check(tmp_path, pages)] == [
        "README.md:5: #set-up: no heading with the anchor #set-up in README.md",
        "README.md:5: docs/guide.md#usage: no heading with the anchor #usage in docs/guide.md",
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("HTTP/JSON", "httpjson"),
        ("Ingest (ReceiverService)", "ingest-receiverservice"),
        ("The original system's routes", "the-original-systems-routes"),
        ("Fleets of devices: one reading per message", "fleets-of-devices-one-reading-per-message"),
        ("What `make test` runs", "what-make-test-runs"),
        ("fleet-load (load generator)", "fleet-load-load-generator"),
        ("snake_case and A -- B", "snake_case-and-a----b"),
        ("See [the guide](guide.md)", "see-the-guide"),
        ("Größe — über", "größe--über"),
    ],
)
def test_anchors_follow_githubs_slug_rules(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_good_anchor_with_punctuation_passes(tmp_path: Path) -> None:
    pages = {"README.md": "## Rules & alarms: what's kept (v1)\n\n[ok](#rules--alarms-whats-kept-v1)\n"}
    assert check(tmp_path, pages) == []


def test_a_repeated_heading_gets_numbered_anchors(tmp_path: Path) -> None:
    text = "# Notes\n\n## Example\n\n## Example\n\n## Example-1\n\n[a](#example) [b](#example-1) [c](#example-1-1)\n"
    assert check(tmp_path, {"README.md": text}) == []
    broken = check(tmp_path, {"README.md": text + "[d](#example-3)\n"})
    assert [problem.link for problem in broken] == ["#example-3"]


def test_setext_headings_and_html_anchors_count(tmp_path: Path) -> None:
    text = 'Title\n=====\n\nPart two\n--------\n\n<a name="pinned"></a>\n\n[a](#title) [b](#part-two) [c](#pinned)\n'
    assert check(tmp_path, {"README.md": text}) == []


def test_code_fences_and_inline_code_hold_no_links_or_headings(tmp_path: Path) -> None:
    text = (
        "# Top\n\n"
        "```sh\n# not-a-heading\ncat [x](missing.md)\n```\n\n"
        "~~~~\n```\n[y](missing-too.md)\n~~~~\n\n"
        "Inline: `[z](gone.md)` and ``a `[w](gone.md)` b``.\n\n"
        "[heading in a fence](#not-a-heading)\n"
    )
    broken = check(tmp_path, {"README.md": text})
    assert [(problem.line, problem.link) for problem in broken] == [(15, "#not-a-heading")]


def test_external_links_are_not_followed(tmp_path: Path) -> None:
    text = "[a](https://example.com/x.md) [b](http://x/#y) [c](mailto:a@b.c) [d](//cdn.example/x)\n"
    assert check(tmp_path, {"README.md": text}) == []


def test_reference_definitions_and_angle_brackets_are_checked(tmp_path: Path) -> None:
    text = "[guide][g] and [spaced](<my page.md>)\n\n[g]: docs/guide.md\n"
    broken = check(tmp_path, {"README.md": text})
    assert [(problem.line, problem.link) for problem in broken] == [(1, "my page.md"), (3, "docs/guide.md")]


def test_node_modules_are_skipped(tmp_path: Path) -> None:
    assert check(tmp_path, {"console/node_modules/x/README.md": "[a](missing.md)\n"}) == []


def test_main_prints_each_broken_link_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "README.md").write_text("# Top\n\n[a](notes.md) [b](draft.md) [c](#top)\n")
    (tmp_path / "draft.md").write_text("# Draft\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "README.md"], check=True)
    monkeypatch.setattr(doclinks, "ROOT", tmp_path)
    assert doclinks.main([]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "README.md:3: notes.md: no such file or folder",
        "README.md:3: draft.md: not in git (exists only in this checkout)",
    ]
    subprocess.run(["git", "-C", str(tmp_path), "add", "draft.md"], check=True)
    (tmp_path / "README.md").write_text("# Top\n\n[b](draft.md) [c](#top)\n")
    assert doclinks.main([]) == 0
