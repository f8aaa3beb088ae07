"""Sessions: ``tests`` (asyncio and trio), ``lint``, ``typing``, ``docs``.

``bench`` and ``qianfan`` run only when named.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typing", "docs"]
nox.options.error_on_missing_interpreters = True

RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"
PYRIGHT = "pyright==1.1.414"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the suite; every async test runs once on asyncio and once on trio."""
    session.install("-e", ".[tests]")
    session.run("pytest", *session.posargs)


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
    session.install("-e", f".[{everything}]", "qianfan", "aiohttp", "matplotlib", "trio")
    session.run("python", "-m", "benchmarks", *session.posargs)
