"""A local emulator of Baidu Qianfan's MPT-30B-instruct API, for tests, demos and benchmarks.

``Emulator`` runs a real HTTP server on loopback that speaks the token endpoint and the
chat endpoint like Baidu's servers (both auth schemes, strict body validation, streaming),
with injectable faults (``Fault``) and counters (``EmulatorStats``). It needs the
``emulator`` extra: ``pip install "mpt-async[emulator]"``.

Example::

    from mpt_async.testing import Emulator, Fault

    with Emulator() as emu:
        emu.inject(Fault.error(18))  # the next chat request hits the QPS limit
        ...  # point a client at emu.base_url with emu.api_key / emu.secret_key
"""

from __future__ import annotations

from mpt_async.testing._emulator import (
    DEFAULT_ACCESS_KEY,
    DEFAULT_API_KEY,
    DEFAULT_SECRET_ACCESS_KEY,
    DEFAULT_SECRET_KEY,
    Emulator,
)
from mpt_async.testing._faults import Fault
from mpt_async.testing._state import EmulatorStats, RecordedRequest

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
