"""The package's version, written once: the build reads it here (pyproject.toml)."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0.dev0"
