"""The docs site: `mkdocs build --strict` succeeds, and its CLI reference shows every command of
`hcdtf.cli.main` (groups and subcommands) with every option name, and its API reference every
module of hcdtf. The site is built once into a temporary directory (about 10-20 s)."""

from __future__ import annotations

import html.parser
import os
import pathlib
import subprocess
import sys

import click
import pytest

from conftest import REPO


class _Sections(html.parser.HTMLParser):
    """Heading id -> (heading text, names of the options shown in its section's <code> elements)."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, tuple[str, set[str]]] = {}
        self._current: str | None = None
        self._heading: str | None = None
        self._code: list[str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in ("h1", "h2", "h3", "h4", "h5") and dict(attrs).get("id"):
            self._heading = dict(attrs)["id"]
            self._text = []
        elif tag == "code" and self._current is not None:
            self._code = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3", "h4", "h5") and self._heading is not None:
            text = "".join(self._text).replace("¶", "").strip()
            self.sections[self._heading] = (text, set())
            self._current, self._heading = self._heading, None
        elif tag == "code" and self._code is not None:
            words = "".join(self._code).replace(",", " ").replace("/", " ").split()
            self.sections[self._current][1].update(w for w in words if w.startswith("-"))
            self._code = None

    def handle_data(self, data):
        if self._heading is not None:
            self._text.append(data)
        if self._code is not None:
            self._code.append(data)


def _commands(group: click.Group) -> dict[str, set[str]]:
    """'hcdtf slide predict' -> its option names (hidden old names included), for every command."""
    out = {}

    def walk(command, ctx, path):
        out[" ".join(path)] = {name for p in command.params if isinstance(p, click.Option)
                               for name in (*p.opts, *p.secondary_opts)}
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                walk(sub, click.Context(sub, info_name=name, parent=ctx), [*path, name])

    walk(group, click.Context(group, info_name="hcdtf"), ["hcdtf"])
    return out


def _missing(page: str, group: click.Group) -> list[str]:
    """What the CLI page lacks: 'command X' for a command without its own section, 'X --opt'
    for an option its section does not show."""
    parser = _Sections()
    parser.feed(page)
    by_title = {text: options for text, options in parser.sections.values()}
    missing = []
    for path, options in _commands(group).items():
        if path not in by_title:
            missing.append(f"command {path}")
            continue
        missing += [f"{path} {name}" for name in sorted(options - by_title[path])]
    return missing


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-6000:]}"
    return out


def test_the_strict_build_succeeds_and_makes_every_page(site):
    for page in ("index.html", "getting-started.html", "guide/train.html", "guide/export.html",
                 "guide/slides.html", "benchmarks/index.html", "design.html", "reference/cli.html",
                 "development/mutants.html", "reference/api/data.html"):
        assert (site / page).is_file(), page
    # the generated tables of the design page were filled in
    design = (site / "design.html").read_text()
    assert "<!-- module-map -->" not in design and "<code>hcdtf.rundir</code>" in design


def test_every_command_and_option_is_in_the_cli_reference(site):
    from hcdtf.cli import main

    commands = _commands(main)
    assert {"hcdtf", "hcdtf train", "hcdtf slide predict", "hcdtf mil train"} <= set(commands)
    assert _missing((site / "reference" / "cli.html").read_text(), main) == []


def test_the_check_finds_a_missing_command_and_a_missing_option(site):
    """The check above can fail: a command the page does not have, and an option it lacks."""
    from hcdtf.cli import main

    page = (site / "reference" / "cli.html").read_text()
    bigger = click.Group("hcdtf", commands=dict(main.commands), params=list(main.params))
    bigger.add_command(click.Command("not-documented", params=[click.Option(["--flag"])]))
    assert _missing(page, bigger) == ["command hcdtf not-documented"]

    start = page.index("<code>--n-test")
    no_option = page[:start] + page[page.index("</code>", start) + len("</code>"):]
    assert _missing(no_option, main) == ["hcdtf sample-data --n-test"]


def test_every_module_is_in_the_api_reference(site):
    pages = "".join(p.read_text() for p in (site / "reference" / "api").glob("*.html"))
    modules = [".".join(p.relative_to(REPO).with_suffix("").parts) for p in (REPO / "hcdtf").rglob("*.py")
               if not p.name.startswith("_") and "__pycache__" not in p.parts]
    assert len(modules) > 50
    assert [m for m in modules if f'id="{m}"' not in pages] == []


def test_the_readme_is_short_and_its_relative_links_resolve():
    import re

    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    assert "make test" in readme  # CI runs the README's test command
    targets = re.findall(r"\]\(((?!https?://|#)[^)#\s]+)(?:#[^)]*)?\)", readme)
    assert len(targets) > 10
    assert [t for t in targets if not (REPO / t).exists()] == []
