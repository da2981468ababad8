"""MkDocs hook: the reference pages, generated from the code at build time.

- ``reference/cli.md``: every command of ``hcdtf.cli.main`` (groups and subcommands, walked
  recursively), its help, usage, arguments and every option (hidden old names included), so the
  CLI reference cannot fall behind the code. tests/test_docs.py checks it against the commands.
- ``reference/api/<package>.md``: one page per package of ``hcdtf`` listing a mkdocstrings
  ``:::`` block for each of its modules, found on disk (griffe reads the sources; nothing imports
  TensorFlow), and the API reference's navigation built from those pages.

Importing ``hcdtf.cli`` is cheap (no TensorFlow at import time; tests/test_architecture.py).
"""

from __future__ import annotations

import functools
import html
import inspect
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hcdtf"
CLI_PAGE = "reference/cli.md"
CLI_MARKER = "<!-- cli-reference -->"
API_DIR = "reference/api"
API_SECTION = "API reference"

# A package's modules are documented on its own page; these titles name the pages.
API_TITLES = {
    "hcdtf": "hcdtf (top level)",
    "hcdtf.data": "hcdtf.data",
    "hcdtf.training": "hcdtf.training",
    "hcdtf.evaluation": "hcdtf.evaluation",
    "hcdtf.inference": "hcdtf.inference",
    "hcdtf.export": "hcdtf.export",
    "hcdtf.models": "hcdtf.models",
    "hcdtf.models.encoders": "hcdtf.models.encoders",
    "hcdtf.stain": "hcdtf.stain",
    "hcdtf.slide": "hcdtf.slide",
    "hcdtf.mil": "hcdtf.mil",
    "hcdtf.synthetic": "hcdtf.synthetic",
}


# ----------------------------------------------------------------------------- CLI reference
def _escape(text: str) -> str:
    """Markdown-safe prose: HTML and emphasis characters escaped outside `code spans`."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # a code span: kept as it is
            out.append(part)
            continue
        part = html.escape(part, quote=False)
        part = re.sub(r"([\\*_\[\]])", r"\\\1", part)
        out.append(part)
    return "".join(out)


def _help_markdown(text: str | None) -> list[str]:
    """A command's help as Markdown: prose paragraphs, and its example commands as code."""
    if not text:
        return []
    lines: list[str] = []
    for para in re.split(r"\n\s*\n", inspect.cleandoc(text)):
        para = "\n".join(line for line in para.splitlines() if line.strip() != "\b").strip()
        if not para:
            continue
        joined = " ".join(line.strip() for line in para.splitlines())
        example = re.match(r"^(.*?\b(?:Example|Examples):)\s*(hcdtf .*)$", joined)
        if joined.startswith("hcdtf "):
            lines += ["```bash", joined, "```", ""]
        elif example:
            lines += [_escape(example.group(1)), "", "```bash", example.group(2), "```", ""]
        else:
            lines += [_escape(joined), ""]
    return lines


def _option_lines(command, ctx) -> list[str]:
    """One bullet per option: its names and metavar (as in --help), then its help and default."""
    import click

    out = []
    visible = {p.name: p for p in command.params if isinstance(p, click.Option) and not p.hidden}
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        if param.hidden:
            names = " / ".join(param.opts + param.secondary_opts)
            new = visible.get(param.name)
            said = (f"old name of `{new.opts[0]}`, still accepted (hidden from `--help`)" if new
                    else "hidden from `--help`")
            out.append(f"- `{names}`: {said}.")
            continue
        record = param.get_help_record(ctx)
        if record is None:  # pragma: no cover (only hidden options have none)
            continue
        names, text = record
        text = " ".join(text.split())
        out.append(f"- `{names}`" + (f": {_escape(text)}" if text else ""))
    return out


def _argument_lines(command) -> list[str]:
    import click

    out = []
    for param in command.params:
        if isinstance(param, click.Argument):
            nargs = " (one or more)" if param.nargs == -1 and param.required else (
                " (any number)" if param.nargs == -1 else "")
            optional = "" if param.required or param.nargs == -1 else " (optional)"
            out.append(f"- `{param.human_readable_name}`{nargs}{optional}: {param.type.name}")
    return out


def _walk(command, ctx, path: list[str]):
    """(path, command, context) for the command and, for a group, every subcommand below it."""
    import click

    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx), [*path, name])


def commands():
    """Every command path of ``hcdtf`` with its click command and context (used by the tests)."""
    import click

    from hcdtf.cli import main

    return list(_walk(main, click.Context(main, info_name="hcdtf"), ["hcdtf"]))


def cli_markdown() -> str:
    import click

    lines: list[str] = []
    for path, command, ctx in commands():
        level = "#" * min(len(path) + 1, 4)
        lines += [f"{level} {' '.join(path)}", ""]
        lines += _help_markdown(command.help)
        usage = " ".join([ctx.command_path, *command.collect_usage_pieces(ctx)])
        lines += ["```text", f"Usage: {usage}", "```", ""]
        if isinstance(command, click.Group):
            subs = [(name, command.get_command(ctx, name)) for name in command.list_commands(ctx)]
            lines += ["Commands:", ""]
            for name, sub in subs:
                if sub is not None and not sub.hidden:
                    anchor = "-".join([*path, name]).lower()
                    short = _escape(sub.get_short_help_str(limit=100))
                    lines.append(f"- [`{' '.join([*path, name])}`](#{anchor}): {short}")
            lines.append("")
        arguments = _argument_lines(command)
        if arguments:
            lines += ["Arguments:", "", *arguments, ""]
        options = _option_lines(command, ctx)
        if options:
            lines += ["Options:", "", *options, ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- API reference
def packages() -> dict[str, list[str]]:
    """Package -> its modules (dotted names), read from the source tree; private ones left out."""
    out: dict[str, list[str]] = {}
    for init in sorted(PACKAGE.rglob("__init__.py")):
        pkg_dir = init.parent
        if "__pycache__" in pkg_dir.parts or any(p.startswith((".", "_")) for p in pkg_dir.relative_to(ROOT).parts):
            continue
        dotted = ".".join(pkg_dir.relative_to(ROOT).parts)
        mods = [f"{dotted}.{f.stem}" for f in sorted(pkg_dir.glob("*.py"))
                if not f.stem.startswith("_")]
        out[dotted] = mods
    return out


def _api_markdown(package: str, modules: list[str]) -> str:
    title = API_TITLES.get(package, package)
    lines = [f"# {title}", "",
             f"Generated from the docstrings of `{package}` and its modules.", "",
             f"::: {package}", "    options:", "      members: false", "      show_root_heading: false", ""]
    for module in modules:
        lines += [f"::: {module}", ""]
    return "\n".join(lines)


def _api_uri(package: str) -> str:
    name = "index" if package == "hcdtf" else package.removeprefix("hcdtf.").replace(".", "-")
    return f"{API_DIR}/{name}.md"


# ----------------------------------------------------------------------------- module map
DESIGN_PAGE = "design.md"
MAP_MARKER = "<!-- module-map -->"
GRAPH_MARKER = "<!-- import-graph -->"


def _summary(path: pathlib.Path) -> str:
    """The first sentence of a module's docstring (what it owns), on one line."""
    import ast

    doc = ast.get_docstring(ast.parse(path.read_text(), str(path))) or ""
    para = " ".join(doc.split("\n\n")[0].split())
    para = re.sub(r":(?:func|class|mod|meth|attr):", "", para)
    match = re.match(r"(.+?\.)(\s|$)", para)
    return (match.group(1) if match else para).rstrip(".:")


def _module_files() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


@functools.cache
def _walker():
    """tools/import_graph.py, the architecture test's import walker, loaded by path (the hook is
    not run from a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_hcdtf_import_graph", ROOT / "tools" / "import_graph.py")
    walker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(walker)
    return walker


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """hcdtf modules that ``name`` imports anywhere in its code (inside functions too)."""
    return _walker().direct_imports(name, path, known)


def _stage(module: str) -> str:
    """The room a module lives in: its package below hcdtf, or the top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def module_map_markdown() -> str:
    files = _module_files()
    lines = ["| module | what it owns (its docstring's first sentence) |", "|---|---|"]
    for name, path in files.items():
        if name == "hcdtf" or name.rsplit(".", 1)[-1].startswith("_"):
            continue
        label = f"`{name}`" + (" (package)" if path.name == "__init__.py" else "")
        lines.append(f"| {label} | {_escape(_summary(path)).replace('|', '&#124;')} |")
    return "\n".join(lines)


def import_graph_markdown() -> str:
    files = _module_files()
    known = set(files)
    edges: dict[str, set[str]] = {}
    for name, path in files.items():
        src = _stage(name)
        for target in _imports(name, path, known):
            dst = _stage(target)
            if dst != src and dst != "hcdtf":
                edges.setdefault(src, set()).add(dst)
    stages = sorted({_stage(n) for n in files if n != "hcdtf"})
    lines = ["| module or package | imports (at any depth of its code) |", "|---|---|"]
    for stage in stages:
        targets = ", ".join(f"`{t}`" for t in sorted(edges.get(stage, ()))) or "nothing of hcdtf"
        lines.append(f"| `{stage}` | {targets} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- hooks
def on_config(config, **kwargs):
    """Put every package's page into the API reference section of the navigation."""
    entries = [{API_TITLES.get(p, p): _api_uri(p)} for p in _ordered(packages())]

    def fill(items):
        for item in items or []:
            if isinstance(item, dict):
                for key, value in item.items():
                    if key == API_SECTION:
                        item[key] = entries
                    elif isinstance(value, list):
                        fill(value)

    fill(config["nav"])
    return config


def _ordered(pkgs: dict[str, list[str]]) -> list[str]:
    known = [p for p in API_TITLES if p in pkgs]
    return known + sorted(p for p in pkgs if p not in API_TITLES)


def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File

    pkgs = packages()
    for package in _ordered(pkgs):
        files.append(File.generated(config, _api_uri(package), content=_api_markdown(package, pkgs[package])))
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    if page.file.src_uri == CLI_PAGE:
        if CLI_MARKER not in markdown:
            raise ValueError(f"docs/{CLI_PAGE} lost its marker {CLI_MARKER}")
        return markdown.replace(CLI_MARKER, cli_markdown())
    if page.file.src_uri == DESIGN_PAGE:
        for marker in (MAP_MARKER, GRAPH_MARKER):
            if marker not in markdown:
                raise ValueError(f"docs/{DESIGN_PAGE} lost its marker {marker}")
        markdown = markdown.replace(MAP_MARKER, module_map_markdown())
        return markdown.replace(GRAPH_MARKER, import_graph_markdown())
    return markdown


_RST_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc|obj):(?=<code>)")


def on_page_content(html_text, page, config, files, **kwargs):
    """Docstrings written for Sphinx say :func:`name`; show just the `name`."""
    if page.file.src_uri.startswith(API_DIR + "/"):
        return _RST_ROLE.sub("", html_text)
    return html_text
