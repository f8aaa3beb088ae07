"""The public face of ``mpt_async.testing``: its namespace, and its annotated attributes."""

from __future__ import annotations

import types
import typing

import pytest

import mpt_async.testing
from mpt_async.testing import Emulator


def test_all_is_the_public_namespace() -> None:
    """__all__ lists exactly the public names the module has (submodules aside), sorted."""
    public = {
        name
        for name in dir(mpt_async.testing)
        if not name.startswith("_")
        and not isinstance(getattr(mpt_async.testing, name), types.ModuleType)
    }
    assert public == set(mpt_async.testing.__all__)
    assert mpt_async.testing.__all__ == sorted(mpt_async.testing.__all__)


def test_every_exported_name_resolves() -> None:
    """Every name of __all__ loads (the package loads its modules on first use)."""
    for name in mpt_async.testing.__all__:
        assert getattr(mpt_async.testing, name) is not None


def test_unknown_names_raise_attribute_error() -> None:
    """A misspelt name is an AttributeError naming it, as for any module."""
    with pytest.raises(AttributeError, match="Emulater"):
        mpt_async.testing.Emulater  # type: ignore[attr-defined]  # noqa: B018


def test_emulator_attributes_are_annotated() -> None:
    """The emulator's public attributes carry annotations (pyright --verifytypes needs them)."""
    hints = typing.get_type_hints(Emulator)
    for name in ("host", "api_key", "secret_key", "access_key", "secret_access_key"):
        assert hints[name] is str
