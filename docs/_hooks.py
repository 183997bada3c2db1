"""Build-time helpers of the documentation site (mkdocs.yml), offline and without plugins.

- ``on_page_markdown``: the home page is README.md, its ``docs/`` links made site links.
- ``SphinxRoles``: a griffe extension turning the Sphinx roles of the docstrings
  (``:func:`cellw1.fit```) into links to the documented object, or into plain code where
  the object has no page. A role naming a ``cellw1`` object that does not exist is a
  warning, so ``mkdocs build --strict`` fails on a docstring that points at a renamed API.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import griffe

ROOT = Path(__file__).resolve().parent.parent
ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|obj|exc|const):`(~?)([\w.]+)(?:\(\))?`")
logger = logging.getLogger("mkdocs.plugins.cellw1_roles")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    """Replace the home page by README.md, its links into docs/ rewritten for the site."""
    if page.file.src_uri != "index.md":
        return markdown
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.sub(r"\]\(docs/", "](", readme)


class SphinxRoles(griffe.Extension):
    """Sphinx roles in docstrings become autorefs links (``optional``: plain code when unrendered)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = ROLE.sub(lambda m, o=obj: _link(o, pkg, m), obj.docstring.value)


def _walk(obj: griffe.Object, seen: set[str] | None = None):
    seen = set() if seen is None else seen
    if obj.path in seen:
        return
    seen.add(obj.path)
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member, seen)


def _resolve(obj: griffe.Object, pkg: griffe.Module, name: str) -> str | None:
    """The full path of ``name`` as written in ``obj``'s docstring, or None when nothing matches.

    A full name (``cellw1.pl.embedding``) is looked up as it is; a short one (``save``,
    ``Cells``) in the object itself, then in each of its parents up to the package.
    """
    prefix = f"{pkg.name}."
    candidates = [name] if name.startswith(prefix) else [f"{s.path}.{name}" for s in (obj, *_parents(obj))]
    for path in candidates:
        try:
            pkg[path.removeprefix(prefix)]
        except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
            continue
        return path
    return None


def _parents(obj: griffe.Object):
    while obj.parent is not None:
        obj = obj.parent
        yield obj


def _link(obj: griffe.Object, pkg: griffe.Module, match: re.Match) -> str:
    short, name = match.group(1) == "~", match.group(2)
    title = name.rsplit(".", 1)[-1] if short else name
    path = _resolve(obj, pkg, name)
    if path is None:
        if name.startswith(f"{pkg.name}."):
            logger.warning("%s: the docstring names %s, which does not exist", obj.path, name)
        return f"`{title}`"
    return f'<autoref identifier="{path}" optional><code>{title}</code></autoref>'
