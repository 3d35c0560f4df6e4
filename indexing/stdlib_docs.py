"""A real corpus present on every machine: passages of the Python standard library's docstrings.

Read with `ast` from the source files, never by importing modules (some act on import).
"""
from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

SKIP = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "turtledemo", "ensurepip",
        "__pycache__", "pydoc_data", "config-3"}


def _docstrings(tree: ast.Module, module: str):
    if (doc := ast.get_docstring(tree)):
        yield module, doc
    stack = [(node, module) for node in tree.body]
    while stack:
        node, prefix = stack.pop(0)
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}.{node.name}"
            if (doc := ast.get_docstring(node)):
                yield name, doc
            if isinstance(node, ast.ClassDef):
                stack.extend((child, name) for child in node.body)


def _paragraphs(doc: str, min_chars: int, max_chars: int):
    buf = ""
    for para in doc.split("\n\n"):
        para = " ".join(para.split())
        buf = f"{buf} {para}".strip()
        if len(buf) >= min_chars:
            yield buf[:max_chars]
            buf = ""
    if len(buf) >= min_chars // 2:
        yield buf[:max_chars]


def stdlib_passages(limit: int | None = None, min_chars: int = 80, max_chars: int = 800) -> tuple[list[str], list[str]]:
    """(ids, texts): one passage per docstring paragraph group, id 'module.Qual.name#n'.

    With `limit`, passages are taken at an even stride so that every part of the library is represented.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    ids, texts = [], []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if SKIP.intersection(rel.parts) or any(p.startswith("config-") for p in rel.parts):
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for name, doc in _docstrings(tree, module):
            for i, para in enumerate(_paragraphs(doc, min_chars, max_chars)):
                ids.append(f"{name}#{i}")
                texts.append(f"{name}: {para}")
    if limit is not None and len(ids) > limit:
        keep = [int(i * len(ids) / limit) for i in range(limit)]
        ids, texts = [ids[i] for i in keep], [texts[i] for i in keep]
    return ids, texts
