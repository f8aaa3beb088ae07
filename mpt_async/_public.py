"""Public classes live in private modules; :func:`claim` shows them as ``mpt_async.X``.

A module that ``import mpt_async`` loads only on first use (so that importing the package
costs little more than its dependencies) claims its own public names when it is loaded, so
that they look the same whichever way they were reached.
"""

from __future__ import annotations

import sys
from typing import Any

import attrs

__all__ = ["claim"]


def claim(namespace: dict[str, Any], *names: str) -> None:
    """Show these public names of a module as ``mpt_async.X``.

    Each class gets ``mpt_async`` as its module (reprs, tracebacks, pickles, docs), an attrs
    class after its annotations were resolved where they were written; and each name joins
    the package's namespace, where type hints naming ``mpt_async`` classes are looked up.
    """
    package = vars(sys.modules["mpt_async"])
    for name in names:
        obj = namespace[name]
        if isinstance(obj, type) and obj.__module__.startswith("mpt_async."):
            if attrs.has(obj):
                attrs.resolve_types(obj)
            obj.__module__ = "mpt_async"
        package.setdefault(name, obj)
