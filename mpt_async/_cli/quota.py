"""The batch command's quota options: ceilings (``--qps``, ``--rpm``, ``--tpm``) and ``--redis``.

Without them the client learns the quota on its own. ``--redis URL`` shares the access token
and the learned quota with every process on that Redis (``pip install 'mpt-async[redis]'``).
"""

from __future__ import annotations

import argparse
from contextlib import AsyncExitStack
from typing import Any

from mpt_async._cli.argtypes import int_at_least, positive_number

__all__ = ["add_quota_options", "quota_settings"]


def add_quota_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--qps``, ``--rpm``, ``--tpm`` and ``--redis`` to a parser."""
    group = parser.add_argument_group(
        "quota", "the client learns the quota by itself; these set ceilings, or share it"
    )
    group.add_argument("--qps", type=positive_number, help="at most this many calls a second")
    group.add_argument("--rpm", type=int_at_least(1), help="at most this many calls a minute")
    group.add_argument("--tpm", type=int_at_least(1), help="at most this many tokens a minute")
    group.add_argument(
        "--redis",
        metavar="URL",
        help="share the access token and the quota through this Redis (redis://host:port)",
    )


async def quota_settings(args: argparse.Namespace, stack: AsyncExitStack) -> dict[str, Any]:
    """The ``Client`` keyword arguments for the quota options (a store closed by ``stack``).

    Raises:
        ConfigurationError: A bad ``--redis`` URL, or coredis is not installed.
    """
    from mpt_async._ratelimit import RateLimits

    settings: dict[str, Any] = {}
    store = None
    if args.redis is not None:
        from mpt_async._redis_store import RedisStore

        store = await stack.enter_async_context(RedisStore(args.redis))
        settings["token_store"] = store
    settings["rate_limits"] = RateLimits(qps=args.qps, rpm=args.rpm, tpm=args.tpm, shared=store)
    return settings
