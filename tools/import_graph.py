"""The repository's own import graph, read from the source (no module is imported): one walker
for the architecture test (tests/test_architecture.py) and the docs site's import table
(docs/hooks/reference.py), so the rule the test keeps and the table the design page shows are
computed the same way."""

from __future__ import annotations

import ast
import pathlib


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    """``root/hcdtf/data/pipeline.py`` -> ``hcdtf.data.pipeline``; a package's ``__init__.py`` is
    the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def direct_imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that module ``name`` (source file ``path``) imports, at any depth
    of its code (imports inside functions too), relative imports resolved; not itself."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known)
    return found - {name}
