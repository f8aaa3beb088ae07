"""Sessions: ``tests`` (asyncio and trio), ``installs``, ``lint``, ``typing``, ``docs``.

``tests`` runs the whole suite with every extra installed. ``installs`` runs, once per
install a user may have (the plain ``pip install mpt-async``, and each extra alone), the
tests whose outcome depends on that install: which HTTP transport the client picks (mpt_async's
pool with h11 on a plain install, aiohttp and httptools with ``speed``), and each extra's own
feature. ``bench`` and ``qianfan`` run only when named.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "installs", "lint", "typing", "docs"]
nox.options.error_on_missing_interpreters = True

RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
PYRIGHT = "pyright==1.1.414"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the suite; every async test runs once on asyncio and once on trio."""
    session.install("-e", ".[tests]")
    session.run("pytest", *session.posargs)


#: What the tests need beside the package: the emulator's server comes without httptools
#: (the ``emulator`` and ``speed`` extras bring it), so a plain install keeps h11 only.
TEST_TOOLS = ("pytest>=8", "trio>=0.26", "hypothesis>=6.100", "uvicorn>=0.30")
#: The tests whose outcome depends on the transport the client picks (marked ``transport``).
TRANSPORT_TESTS = (
    "tests/test_client_chat.py",
    "tests/test_client_faults.py",
    "tests/test_hostile.py",
)
#: Each install, stamina style: (what to install beside TEST_TOOLS, the tests to run).
INSTALLS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # No extra: no aiohttp, no httptools: the pool parses with h11 on asyncio and trio.
    "plain": (
        ("trustme>=1.1",),
        (*TRANSPORT_TESTS, "tests/test_import.py", "tests/test_proxy_tls.py"),
    ),
    # aiohttp on asyncio, the pool with httptools on trio, orjson.
    "speed": ((), TRANSPORT_TESTS),
    "redis": ((), ("tests/test_redis_store.py", "tests/test_redis_lies.py")),
    "otel": (
        ("opentelemetry-sdk>=1.27", "opentelemetry-instrumentation-httpx>=0.48b0"),
        ("tests/test_telemetry.py",),
    ),
    # The command line has no extra of its own: it runs on the plain install.
    "cli": ((), ("tests/test_cli.py", "tests/test_cli_errors.py", "tests/test_cli_batch.py")),
}


@nox.session
@nox.parametrize("install", list(INSTALLS), ids=list(INSTALLS))
def installs(session: nox.Session, install: str) -> None:
    """The tests that depend on one install (the plain one, or one extra), on that install."""
    tools, tests = INSTALLS[install]
    package = "." if install in ("plain", "cli") else f".[{install}]"
    session.install("-e", package, *TEST_TOOLS, *tools)
    session.run("pytest", *tests, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff's checks (ASYNC rules included) and its formatter."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict and pyright on the package and on tests/typing/ (a never-run user program).

    ``pyright --verifytypes`` then checks that every public name (of ``mpt_async`` and its
    ``testing`` subpackage) has a known type: the score must be 100%.
    """
    session.install("-e", ".[typing]", MYPY, PYRIGHT)
    session.run("mypy")
    session.run("pyright", "tests/typing")
    session.run("pyright", "--verifytypes", "mpt_async", "--ignoreexternal")


@nox.session(reuse_venv=True)  # a re-run skips the slow part: installing the toolchain
def docs(session: nox.Session) -> None:
    """Build the site (warnings are errors), then run and type-check every example in it.

    The HTML goes to docs/_build/html (not committed); the browser check's screenshots to
    docs/_build/screenshots.
    """
    session.install("-e", ".[tests]")
    html = "docs/_build/html"
    session.run("sphinx-build", "-W", "--keep-going", "-E", "-q", "-b", "html", "docs", html)
    session.run(
        "pytest",
        "tests/test_docs_site.py",
        "tests/test_docs_examples.py",
        "tests/test_docs_typing.py",
        *session.posargs,
        env={"MPT_DOCS_HTML": html},
    )


@nox.session(default=False)
def qianfan(session: nox.Session) -> None:
    """Prove the emulator stands in for Baidu's server: the official SDK against it."""
    session.install("-e", ".[tests]", "qianfan")
    session.run("pytest", "tests/test_qianfan_sdk.py", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks; writes benchmarks/RESULTS.md and benchmarks/cpu_per_call.png.

    Installs every extra the project defines (import time is measured with all of them).
    """
    from pathlib import Path

    import tomllib

    extras = tomllib.loads(Path("pyproject.toml").read_text())["project"]["optional-dependencies"]
    everything = ",".join(sorted(extras))
    session.install(
        "-e", f".[{everything}]", "qianfan", "aiohttp", "httpx-aiohttp", "matplotlib", "trio"
    )
    session.run("python", "-m", "benchmarks", *session.posargs)
