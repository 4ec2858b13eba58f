"""The modeling file of a compact folder: :mod:`fineprune.export.compact_modeling` with :mod:`fineprune.layouts`
written in place of its import, so that the folder needs only torch and transformers to load.

Its text is a function of the installed fineprune alone: the compact export writes it, and loading recognises a
folder's copy of it by its content (nothing else in a folder's code is run without ``--trust-remote-code``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from fineprune import layouts
from fineprune.export import compact_modeling

MODELING_FILE = "modeling_fineprune_compact.py"


def _body(source: str) -> list[str]:
    """The lines of a module after its ``from __future__`` import (its docstring and that import left out)."""
    future = next(n for n in ast.parse(source).body if isinstance(n, ast.ImportFrom) and n.module == "__future__")
    return source.splitlines(keepends=True)[future.end_lineno :]


def modeling_source() -> str:
    """compact_modeling.py with its ``from fineprune.layouts import ...`` replaced by the body of layouts.py."""
    modeling = Path(compact_modeling.__file__).read_text(encoding="utf-8")
    inline = next(n for n in ast.parse(modeling).body if isinstance(n, ast.ImportFrom) and n.module == layouts.__name__)
    lines = modeling.splitlines(keepends=True)
    inlined = [
        f"# -- {layouts.__name__}, written in place of its import\n",
        *_body(Path(layouts.__file__).read_text(encoding="utf-8")),
    ]
    return "".join(
        lines[: inline.lineno - 1] + inlined + [f"# -- end of {layouts.__name__}\n"] + lines[inline.end_lineno :]
    )


def write_modeling_file(folder: Path) -> Path:
    """Write the modeling file into ``folder``."""
    path = Path(folder) / MODELING_FILE
    path.write_bytes(modeling_source().encode("utf-8"))
    return path


def is_own_modeling_file(path: Path) -> bool:
    """True if the file at ``path`` is, byte for byte, the modeling file this fineprune writes."""
    return path.is_file() and path.read_bytes() == modeling_source().encode("utf-8")
