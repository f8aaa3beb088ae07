"""A local emulator of Baidu Qianfan's MPT-30B-instruct API, for tests, demos and benchmarks.

``Emulator`` runs a real HTTP server on loopback that speaks the token endpoint and the
chat endpoint like Baidu's servers (both auth schemes, strict body validation, streaming),
with injectable faults (``Fault``), scripted replies (``Emulator.add_reply``) and counters
(``EmulatorStats``). It needs the ``emulator`` extra: ``pip install "mpt-async[emulator]"``.
Its pytest plugin (``mpt_async.testing.pytest_plugin``) provides the ``mpt_emulator``
and ``mpt_client`` fixtures.

Example::

    from mpt_async.testing import Emulator, Fault

    with Emulator() as emu:
        emu.inject(Fault.error(18))  # the next chat request hits the QPS limit
        emu.add_reply("yes")  # and the one after answers "yes"
        ...  # point a client at emu.base_url with emu.api_key / emu.secret_key
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from mpt_async.testing._emulator import (
        DEFAULT_ACCESS_KEY,
        DEFAULT_API_KEY,
        DEFAULT_SECRET_ACCESS_KEY,
        DEFAULT_SECRET_KEY,
        Emulator,
    )
    from mpt_async.testing._faults import Fault
    from mpt_async.testing._records import EmulatorStats, RecordedRequest

# Loaded on first use, so that the pytest plugin (a submodule) costs nothing until a test
# asks for the emulator.
_LAZY = {
    "DEFAULT_ACCESS_KEY": "mpt_async.testing._emulator",
    "DEFAULT_API_KEY": "mpt_async.testing._emulator",
    "DEFAULT_SECRET_ACCESS_KEY": "mpt_async.testing._emulator",
    "DEFAULT_SECRET_KEY": "mpt_async.testing._emulator",
    "Emulator": "mpt_async.testing._emulator",
    "EmulatorStats": "mpt_async.testing._records",
    "Fault": "mpt_async.testing._faults",
    "RecordedRequest": "mpt_async.testing._records",
}

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_API_KEY",
    "DEFAULT_SECRET_ACCESS_KEY",
    "DEFAULT_SECRET_KEY",
    "Emulator",
    "EmulatorStats",
    "Fault",
    "RecordedRequest",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
