"""``python -m mpt_async`` (also ``mpt-async``): chat from the shell, or run the emulator.

Commands:

- ``chat [PROMPT]``: ask a question and stream the answer (see ``chat --help``).
- ``batch PROMPTS -o OUTPUT``: answer every line of a JSON Lines file, resumably (see
  ``batch --help``).
- ``emulator``: run the local emulator of the Qianfan API in the foreground (needs the
  ``emulator`` extra).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from mpt_async import __version__
from mpt_async._cli.batch import add_batch_parser
from mpt_async._cli.chat import add_chat_parser
from mpt_async._cli.common import EXIT_INTERRUPTED, EXIT_USAGE, PROG

__all__ = ["main"]

_INSTALL_HINT = "pip install 'mpt-async[emulator]'"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``mpt_async: error: ...``."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the problem and exit with status 2.

        Args:
            message: What argparse found wrong.
        """
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see {self.prog} --help)\n")


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m mpt_async" if name in ("", "__main__.py", "-c") else name


def _build_parser(prog: str) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description=(
            "Talk to Baidu Qianfan's MPT-30B-instruct from the shell, or run a local "
            "emulator of its API."
        ),
    )
    parser.add_argument("--version", action="version", version=f"mpt_async {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_chat_parser(commands)
    add_batch_parser(commands)
    # Only a name in the list: the real sub-command lives in mpt_async.testing, whose import
    # needs uvicorn, so it is imported only when "emulator" is actually asked for.
    commands.add_parser(
        "emulator",
        help="run a local emulator of the Qianfan API (see emulator --help)",
        add_help=False,
    )
    return parser


def _run_emulator(prog: str, argv: list[str]) -> int:
    try:
        from mpt_async.testing._cli import add_emulator_parser, run_emulator
    except ImportError as exc:
        print(
            f"{PROG}: error: the emulator is not installed ({exc}): run {_INSTALL_HINT}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    parser = _Parser(prog=prog)
    add_emulator_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["emulator", *argv])
    return run_emulator(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: The arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 1 when the service or the network failed, 2 for a
        usage, configuration or validation error, 130 after Ctrl-C.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    prog = _prog()
    try:
        try:
            if args_list[:1] == ["emulator"]:
                return _run_emulator(prog, args_list[1:])
            args = _build_parser(prog).parse_args(args_list)
            status: int = args.func(args)
        except SystemExit as exc:  # --help, --version, and argparse's usage errors
            code = exc.code
            return code if isinstance(code, int) else (0 if code is None else EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, and keep Python's exit-time
        # flush of stdout from complaining about the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
