"""MkDocs hook: the two generated references, so neither can drift from the code.

* The API reference: one page per module of the ``raynas`` package, found by walking the
  source tree at build time (a moved or new module needs no edit here), each page a
  mkdocstrings ``::: module`` block. mkdocstrings reads the code statically (griffe), so the build
  imports neither torch nor Ray. The pages are listed in the nav under "API reference".
* The table of dataset kinds in ``datasets.md``, in place of ``<!-- dataset-kinds -->``: every
  ``Source`` registered in ``raynas.data.SOURCES``, the applications' included.
* The CLI reference: ``raynas.cli.build_parser()`` rendered into ``cli.md`` in place of the
  ``<!-- cli-reference -->`` marker, every subcommand (and nested ones, e.g. ``bench``) with its
  arguments and help. Importing ``raynas.cli`` is light (no torch).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.reference")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "raynas"
API_TITLE = "API reference"
API_DIR = "reference"  # docs/reference/index.md is written by hand; the module pages are not
CLI_PAGE = "cli.md"
CLI_MARKER = "<!-- cli-reference -->"
DATASETS_PAGE = "datasets.md"
DATASETS_MARKER = "<!-- dataset-kinds -->"

_modules: list[str] = []  # this build's modules: found by on_config, paged by on_files


def modules(root: Path = ROOT, package: str = PACKAGE) -> list[str]:
    """Every importable module of ``package`` (dotted names, sorted), public ones only.

    A folder counts as a package only with an ``__init__.py``, as for setuptools: a folder
    without one (a move in progress) is skipped, not documented half-way.
    """
    found = []
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if any(p.startswith("_") and p != "__init__" for p in parts):
            continue
        folders = [root.joinpath(*parts[:i]) for i in range(1, len(parts))]
        if not all((folder / "__init__.py").is_file() for folder in folders):
            log.info("API reference: %s skipped (a folder above it has no __init__.py)", path)
            continue
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(set(found))


def _page(module: str) -> str:
    return f"{API_DIR}/{module.replace('.', '/')}.md"


def _nav(names: list[str]) -> list[Any]:
    """Nested nav entries: a package is a section holding its own page and its modules."""
    children: dict[str, list[str]] = {}
    for name in names:
        parent = name.rpartition(".")[0]
        children.setdefault(parent, []).append(name)

    def entry(name: str) -> Any:
        if name not in children:
            return {name: _page(name)}
        return {name: [{name: _page(name)}, *(entry(child) for child in children[name])]}

    return [entry(name) for name in children.get(PACKAGE, [])]


def _replace_api(nav: list[Any], pages: list[Any]) -> bool:
    for i, item in enumerate(nav):
        if not isinstance(item, dict):
            continue
        (title, value), = item.items()
        if title == API_TITLE:
            index = value if isinstance(value, str) else f"{API_DIR}/index.md"
            nav[i] = {title: [{"Overview": index}, {PACKAGE: _page(PACKAGE)}, *pages]}
            return True
        if isinstance(value, list) and _replace_api(value, pages):
            return True
    return False


def on_config(config: Any) -> Any:
    names = modules()
    if not names or names[0] != PACKAGE:
        raise RuntimeError(f"no package {PACKAGE!r} under {ROOT}")
    if config.nav is not None and not _replace_api(config.nav, _nav(names)):
        raise RuntimeError(f"mkdocs.yml: the nav has no {API_TITLE!r} entry")
    _modules[:] = names
    return config


def on_files(files: Any, config: Any) -> Any:
    for name in _modules:
        files.append(File.generated(config, _page(name), content=f"# `{name}`\n\n::: {name}\n"))
    return files


# ---- the CLI reference --------------------------------------------------------------------

def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser,
                                                                  str]]:
    """(name, parser, help) of each subcommand, in the order they were added."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            found += [(name, sub, helps.get(name, "")) for name, sub in action.choices.items()]
    return found


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    formatter = parser._get_formatter()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            metavar = formatter._format_args(action, action.dest.upper())
            names = ", ".join(f"{o} {metavar}".strip() if action.nargs != 0 else o
                              for o in action.option_strings)
        else:
            names = formatter._metavar_formatter(action, action.dest)(1)[0]
        text = formatter._expand_help(action) if action.help else ""
        default = action.default
        shown = default is not None and default is not False and default != []
        if shown and default is not argparse.SUPPRESS and action.option_strings and (
                "default" not in text):
            text = f"{text} (default: {default})".strip()
        if action.required and action.option_strings:
            text = f"**required**; {text}" if text else "**required**"
        rows.append(f"| `{_escape(names)}` | {_escape(text)} |")
    return rows


def render_cli(parser: argparse.ArgumentParser, path: tuple[str, ...] = (), level: int = 2,
               help_text: str = "") -> str:
    """Markdown for ``parser`` and, recursively, its subcommands."""
    out = []
    if path:
        out.append(f"{'#' * level} `{' '.join(path)}`\n")
        if help_text:
            out.append(f"{help_text[:1].upper()}{help_text[1:]}.\n")
    usage = " ".join(parser.format_usage().removeprefix("usage: ").split())
    out.append(f"```text\n{usage}\n```\n")
    commands = _subparsers(parser)
    if commands and not path:
        out.append("| command | what it does |\n| --- | --- |\n" + "\n".join(
            f"| [`raynas {name}`](#raynas-{name}) | {_escape(text)} |"
            for name, _, text in commands) + "\n")
    rows = _argument_rows(parser)
    if rows:
        out.append("| argument | meaning |\n| --- | --- |\n" + "\n".join(rows) + "\n")
    for name, sub, text in commands:
        out.append(render_cli(sub, (*path, name) if path else ("raynas", name),
                              min(level + (1 if path else 0), 6), text))
    return "\n".join(out)


def cli_reference() -> str:
    sys.path.insert(0, str(ROOT))  # the checkout's raynas, installed or not
    try:
        from raynas.cli import build_parser
    finally:
        sys.path.remove(str(ROOT))
    return render_cli(build_parser())


def dataset_kinds() -> str:
    """The registered dataset kinds as a Markdown table (``raynas data kinds`` prints the same)."""
    sys.path.insert(0, str(ROOT))
    try:
        from raynas.data import kinds_table
    finally:
        sys.path.remove(str(ROOT))
    return kinds_table()


GENERATED = {CLI_PAGE: (CLI_MARKER, cli_reference), DATASETS_PAGE: (DATASETS_MARKER, dataset_kinds)}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if page.file.src_uri not in GENERATED:
        return markdown
    marker, render = GENERATED[page.file.src_uri]
    if marker not in markdown:
        raise RuntimeError(f"{page.file.src_uri}: the marker {marker} is missing")
    return markdown.replace(marker, render())
