"""The ``dreamjit-api`` directive: API reference sections generated from ``dreamjit.__all__``.

Usage in a reStructuredText page (the generated autodoc directives are
reStructuredText, so the page must be one too)::

    .. dreamjit-api:: pool

Every public name of ``dreamjit.__all__`` belongs to exactly one group: the
names listed in ``GROUPS``, the ``errors`` group (the ``DreamError``
hierarchy), or ``other`` (anything public that no group names yet). Each
group renders an autosummary table followed by the autodoc entry of each
name. The build fails (``-W``) if a name listed here is no longer public,
or if a group other than ``other`` is unknown, so the reference cannot drift
from ``__all__``.
"""

from __future__ import annotations

import enum
import inspect

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

logger = logging.getLogger(__name__)

#: group -> public names in reading order ("errors" and "other" are computed)
GROUPS = {
    "pool": ["DreamPool", "PoolConfig", "Columns", "BudgetStats", "CacheStats", "warmup"],
    "queries": ["Query", "RetrievalMode", "RetrievalWeights", "Hits", "BatchHits", "Hit",
                "DreamEntry"],
    "features": ["evaluate", "evaluate_batch", "SolverResult", "spectral_features",
                 "spectral_features_batch", "SpectralFeatures", "chroma_signature"],
    "diversity": ["maximal_marginal_relevance"],
    "internals": ["EmbeddingMapper", "QueryCache", "ExactIndex", "NNDescentIndex"],
}
COMPUTED = ("errors", "other")

#: per-class autodoc options
CLASS_OPTIONS = {
    "DreamPool": [":members:", ":inherited-members:"],
}


def _public():
    import dreamjit

    return {name: getattr(dreamjit, name) for name in dreamjit.__all__}


def group_names(group: str) -> list[str]:
    public = _public()
    from dreamjit import DreamError

    errors = [
        n for n, obj in public.items() if inspect.isclass(obj) and issubclass(obj, DreamError)
    ]
    listed = {n for names in GROUPS.values() for n in names}
    if group == "errors":
        return errors
    if group == "other":
        return [n for n in public if n not in listed and n not in errors]
    return list(GROUPS[group])


def _is_namedtuple(obj) -> bool:
    return inspect.isclass(obj) and issubclass(obj, tuple) and hasattr(obj, "_fields")


def _entry(name: str, obj) -> list[str]:
    target = f"dreamjit.{name}"
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return [f".. autoexception:: {target}", "   :show-inheritance:"]
    if inspect.isclass(obj):
        if issubclass(obj, enum.Enum):
            opts = [":members:", ":undoc-members:"]
        elif _is_namedtuple(obj):
            opts = []  # fields are described in the docstring's Attributes section
        else:
            opts = CLASS_OPTIONS.get(name, [":members:"])
        return [f".. autoclass:: {target}"] + [f"   {o}" for o in opts]
    return [f".. autofunction:: {target}"]


class DreamjitAPI(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self):
        group = self.arguments[0]
        if group not in GROUPS and group not in COMPUTED:
            known = sorted(GROUPS) + list(COMPUTED)
            raise self.error(f"unknown API group {group!r}; known: {known}")
        public = _public()
        names = group_names(group)
        missing = [n for n in names if n not in public]
        if missing:
            raise self.error(f"names not in dreamjit.__all__: {missing}")
        if not names:
            return [nodes.paragraph(text="None: every public name is placed in a group above.")]
        lines = [".. currentmodule:: dreamjit", "", ".. autosummary::", ""]
        lines += [f"   {n}" for n in names] + [""]
        for n in names:
            lines += _entry(n, public[n]) + [""]
        container = nodes.container()
        nested_parse_with_titles(
            self.state, StringList(lines, source=f"dreamjit-api:{group}"), container
        )
        return container.children


def _check_groups(app):
    """Every listed name public and listed once."""
    import dreamjit

    seen = {}
    for group, names in GROUPS.items():
        for n in names:
            if n in seen:
                logger.warning("dreamjit-api: %s is listed in groups %s and %s", n, seen[n], group)
            seen[n] = group
            if n not in dreamjit.__all__:
                logger.warning("dreamjit-api: %s (group %s) is not in dreamjit.__all__", n, group)


def setup(app):
    app.add_directive("dreamjit-api", DreamjitAPI)
    app.connect("builder-inited", _check_groups)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
