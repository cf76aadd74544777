"""Sessions: `nox -s tests` (core + every plugin), `core`, `plugin`, `demo`, `lint`.

All sessions share ONE environment, `.venv` at the repository root: torch costs ~5.7 GB and ~90 s
to install, so it is installed once, with the core and every plugin editable in it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox

nox.options.sessions = ["tests"]

ROOT = Path(__file__).parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PLUGINS = sorted(p.name for p in (ROOT / "plugins").glob("ad-*") if (p / "pyproject.toml").exists())
TEST_ENV = {"MPLBACKEND": "Agg", "ADCORE_PROGRESS": "0"}


def _env(session: nox.Session, *extra: str) -> None:
    """Create `.venv` if needed and (re)install the core and every plugin, editable.

    The first run downloads torch and its libraries: pip's own progress bars show it (no `-q` there); later runs
    only re-link the editable packages and stay quiet.
    """
    first = not (BIN / "python").exists()
    if first:
        session.log(f"creating {VENV} and installing torch, timm and the plugins into it (first run only: torch "
                    "and its libraries take ~5.7 GB and ~90 s on a fast connection; pip shows the downloads)")
        session.run(sys.executable, "-m", "venv", str(VENV), external=True)
        session.run(str(BIN / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip", external=True)
    else:
        session.log(f"updating the editable installs in {VENV}")
    editable = [arg for plugin in PLUGINS for arg in ("-e", f"plugins/{plugin}[test]")]  # with its test extras
    quiet = [] if first else ["-q"]
    session.run(str(BIN / "python"), "-m", "pip", "install", *quiet, "-e", ".[test]", *editable, *extra,
                external=True)


def _pytest(session: nox.Session, *paths: str) -> None:
    session.run(str(BIN / "python"), "-m", "pytest", *paths, *session.posargs, env=TEST_ENV, external=True)


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Core and all plugin tests, in one run."""
    _env(session)
    _pytest(session, "tests", *[f"plugins/{p}/tests" for p in PLUGINS])


@nox.session(python=False)
def core(session: nox.Session) -> None:
    """Core tests only."""
    _env(session)
    _pytest(session, "tests")


@nox.session(python=False)
@nox.parametrize("name", PLUGINS)
def plugin(session: nox.Session, name: str) -> None:
    """One plugin's tests, e.g. `nox -s "plugin(name='ad-memory')"`."""
    _env(session)
    _pytest(session, f"plugins/{name}/tests")


@nox.session(python=False)
def demo(session: nox.Session) -> None:
    """The main job: build the synthetic demo set, train and evaluate PatchCore on its five categories."""
    _env(session)
    session.run(str(BIN / "adcore"), "demo", *session.posargs, external=True)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    _env(session, "ruff")
    session.run(str(BIN / "ruff"), "check", "ad_core", "tests", "plugins", "examples", "benchmarks", external=True)
