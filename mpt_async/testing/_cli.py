"""The ``emulator`` command: ``python -m mpt_async emulator --port 8866``.

``mpt_async.__main__`` mounts it with :func:`add_emulator_parser` and runs it with
:func:`run_emulator`; ``python -m mpt_async.testing`` runs it on its own (:func:`main`).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

from mpt_async._cli.argtypes import (
    add_count_option,
    int_at_least,
    non_negative_number,
    positive_number,
)

__all__ = ["DEFAULT_PORT", "add_emulator_parser", "main", "run_emulator"]

#: The port used when ``--port`` is not given.
DEFAULT_PORT = 8866
_DESCRIPTION = (
    "Run a local emulator of Baidu Qianfan's MPT-30B-instruct API in the foreground "
    "(on loopback unless --host says otherwise; Ctrl-C stops it). Credentials come from "
    "QIANFAN_AK/QIANFAN_SK and QIANFAN_ACCESS_KEY/QIANFAN_SECRET_KEY when set, else "
    "documented defaults."
)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; anything but loopback (e.g. 0.0.0.0 in a container) is"
        " reachable by others and gets a warning (default: %(default)s)",
    )
    add_count_option(
        parser, "--port", minimum=0, default=DEFAULT_PORT, help="port; 0 picks a free one"
    )
    add_count_option(
        parser, "--stream-chunks", minimum=1, default=3, help="chunks per streamed answer"
    )
    parser.add_argument(
        "--chunk-delay",
        type=non_negative_number,
        default=0.0,
        help="seconds between stream chunks (default: %(default)s)",
    )
    parser.add_argument(
        "--token-ttl",
        type=non_negative_number,
        default=2592000.0,
        help="lifetime of issued access tokens in seconds (default: %(default)s)",
    )
    parser.add_argument(
        "--endpoint",
        action="append",
        dest="endpoints",
        metavar="NAME",
        help="serve only this endpoint name (repeatable; default: any name)",
    )
    _add_limit_arguments(parser)


def _add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--qps", type=positive_number, help="chat calls per second, else error 18 (default: none)"
    )
    parser.add_argument(
        "--rpm",
        type=int_at_least(1),
        help="chat calls per minute, else error 336501; sends X-Ratelimit-* headers",
    )
    parser.add_argument(
        "--tpm",
        type=int_at_least(1),
        help="tokens per minute, else error 336502; sends X-Ratelimit-* headers",
    )


def add_emulator_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``emulator`` sub-command to a parser's sub-commands.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.

    Returns:
        The new sub-parser (its ``func`` default is :func:`run_emulator`).
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "emulator", help="run a local emulator of the Qianfan API", description=_DESCRIPTION
    )
    _add_arguments(parser)
    parser.set_defaults(func=run_emulator)
    return parser


def _describe(name: str, value: str, default: str, *, secret: bool) -> str:
    if value == default:
        return f"{name}={value}"
    if os.environ.get(name) == value:
        return f"{name} (from the environment)"
    return f"{name} (custom)" if secret else f"{name}={value}"


def _banner(emulator: Any, out: TextIO) -> None:
    from mpt_async.testing import _emulator as defaults

    url = emulator.base_url
    ak = _describe("QIANFAN_AK", emulator.api_key, defaults.DEFAULT_API_KEY, secret=False)
    sk = _describe("QIANFAN_SK", emulator.secret_key, defaults.DEFAULT_SECRET_KEY, secret=True)
    iam_ak = _describe(
        "QIANFAN_ACCESS_KEY", emulator.access_key, defaults.DEFAULT_ACCESS_KEY, secret=False
    )
    iam_sk = _describe(
        "QIANFAN_SECRET_KEY",
        emulator.secret_access_key,
        defaults.DEFAULT_SECRET_ACCESS_KEY,
        secret=True,
    )
    lines = [
        f"mpt_async emulator listening on {url}",
        f"  QIANFAN_BASE_URL={url}",
        f"  access-token auth: {ak} {sk}",
        f"  AK/SK auth:        {iam_ak} {iam_sk}",
        f"  (the qianfan SDK with AK/SK also wants QIANFAN_CONSOLE_API_BASE_URL={url})",
        f"  controls: {url}/_emulator/stats, /faults, /config, /reset, /tokens",
    ]
    limits = [
        f"{name}={value}"
        for name, value in (("qps", emulator.qps), ("rpm", emulator.rpm), ("tpm", emulator.tpm))
        if value is not None
    ]
    if limits:
        lines.append(f"  rate limits: {' '.join(limits)}")
    lines += [
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), file=out, flush=True)


def run_emulator(args: argparse.Namespace) -> int:
    """Run the emulator until Ctrl-C or SIGTERM; print where it listens on stderr.

    Args:
        args: Parsed by a parser built with :func:`add_emulator_parser`.

    Returns:
        The exit status: 0 after a clean stop, 1 if the server could not start.
    """
    try:
        from mpt_async.testing import Emulator
    except ImportError as exc:  # uvicorn is an optional extra
        print(f"error: {exc}; install mpt-async[emulator]", file=sys.stderr)
        return 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            emulator = _build(Emulator, args)
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
        emulator.start()
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        print(f"error: cannot start the emulator: {exc}", file=sys.stderr)
        return 1
    return _serve(emulator)


def _build(emulator_class: Any, args: argparse.Namespace) -> Any:
    return emulator_class(
        host=args.host,
        port=args.port,
        token_ttl=args.token_ttl,
        stream_chunks=args.stream_chunks,
        chunk_delay=args.chunk_delay,
        endpoints=args.endpoints,
        qps=getattr(args, "qps", None),
        rpm=getattr(args, "rpm", None),
        tpm=getattr(args, "tpm", None),
    )


def _serve(emulator: Any) -> int:
    """Serve until Ctrl-C or SIGTERM, then stop."""
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        _banner(emulator, sys.stderr)
        # Short waits keep the main thread responsive to Ctrl-C on every platform.
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print("mpt_async emulator stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run the emulator.

    Args:
        argv: The arguments, without the program name.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="python -m mpt_async.testing", description=_DESCRIPTION)
    _add_arguments(parser)
    return run_emulator(parser.parse_args(argv))
