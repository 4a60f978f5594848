"""The documentation: the site builds with `mkdocs build --strict` (every link, anchor, generated
CLI and API page checked by MkDocs itself), and the README stays a short overview that starts
with the set-up commands CI runs, with no link that leads nowhere or out of the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 170

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+).+?\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*$", re.MULTILINE)
EXPLICIT_ID = re.compile(r"\{[^}]*#([\w-]+)[^}]*\}")


def markdown_files() -> list[Path]:
    """The README, the changelog and every page under docs/ (not the hooks' files)."""
    pages = [p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts]
    return [README, REPO / "CHANGELOG.md", *sorted(pages)]


def prose(text: str) -> str:
    """``text`` without code blocks and inline code, where a bracket is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def anchors(page: Path) -> set[str]:
    """The ids a page's headings get: an explicit ``{#id}``, else the slug MkDocs' toc and
    GitHub both make of a plain heading (lower case, punctuation dropped, spaces to hyphens)."""
    ids = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):
        if explicit := EXPLICIT_ID.search(heading):
            ids.add(explicit.group(1))
            continue
        text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
        ids.add(re.sub(r"[-\s]+", "-", text))
    return ids


def generated_module(target: Path) -> bool:
    """A link to an API page that the docs hook generates: docs/reference/raynas/x.md is the
    page of module raynas.x, and exists when the module does."""
    try:
        parts = target.relative_to(DOCS / "reference").with_suffix("").parts
    except ValueError:
        return False
    module = REPO.joinpath(*parts)
    return module.with_suffix(".py").is_file() or (module / "__init__.py").is_file()


def test_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--site-dir", str(site)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    # The generated references are there: every command of the parser, a page per module.
    from raynas.cli import build_parser

    cli = (site / "cli" / "index.html").read_text()
    commands = next(a for a in build_parser()._actions if a.choices and a.dest == "command")
    for name in commands.choices:
        assert f"raynas {name}" in cli, f"the CLI reference misses `raynas {name}`"
    assert "SearchConfig" in (site / "reference" / "raynas" / "config" / "index.html").read_text()
    assert (site / "reference" / "raynas" / "errors" / "index.html").is_file()


def test_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines: keep it an overview (≤ {README_MAX_LINES}) and put "
        "the rest in docs/")


def test_readme_names_nothing_outside_the_repository() -> None:
    text = README.read_text()
    assert "../" not in text, "README.md points outside the repository (../)"
    assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)", text), \
        "README.md links outside the repository"


def test_readme_starts_with_the_setup_commands_ci_runs() -> None:
    text = README.read_text()
    block = FENCE.search(text)
    assert block, "README.md has no code block"
    heading = re.search(r"^## ", text, re.MULTILINE)
    assert heading is None or block.start() < heading.start(), \
        "the set-up commands must come first, before any section"
    lines = block.group(0).splitlines()
    assert lines[0] == "```bash" and lines[-1] == "```"
    search, tests = lines[1:-1]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci, f".ci/run does not run the README's second command verbatim: {tests}"
    install = "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' && "
    assert tests.startswith(install) and search == install + ".venv/bin/raynas search"
    # The getting-started page repeats them: the same two lines, not a drifting copy.
    assert f"{search}\n{tests}\n" in (DOCS / "getting-started.md").read_text()


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_links_lead_somewhere_inside_the_repository(page: Path) -> None:
    for target in LINK.findall(prose(page.read_text())):
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE), \
            f"{page.name}: a link outside the repository: {target}"
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.is_relative_to(REPO), f"{page.name}: {target} leaves the repository"
        if generated_module(resolved):
            continue
        assert resolved.exists(), f"{page.name}: {target} does not exist"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.name}: no heading #{anchor} in {path}"


def test_screenshots_are_on_the_tracking_page_and_every_picture_on_a_page() -> None:
    tracking = (DOCS / "tracking.md").read_text()
    for picture in sorted(DOCS.glob("mlflow-*.png")):
        assert f"]({picture.name})" in tracking, f"docs/tracking.md does not show {picture.name}"
    pages = "".join(page.read_text() for page in DOCS.glob("*.md"))
    for picture in sorted(DOCS.glob("*.png")):
        assert f"]({picture.name})" in pages, f"no page of docs/ shows {picture.name}"
