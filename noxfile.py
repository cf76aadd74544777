"""Sessions: `nox -s tests` (core + every plugin + the runtime), `core`, `plugin`, `runtime`, `demo`, `lint`.

All torch sessions share ONE environment, `.venv` at the repository root: torch costs ~5.7 GB and ~90 s
to install, so it is installed once, with the core, every plugin and the runtime editable in it. The runtime's
own tests run in a second, small environment without torch, `.venv-runtime` (onnxruntime, numpy, Pillow and the
serving libraries: ~100 MB), which proves the runtime needs no torch.
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
RUNTIME_VENV = ROOT / ".venv-runtime"
RUNTIME_BIN = RUNTIME_VENV / ("Scripts" if os.name == "nt" else "bin")
RUNTIME = "runtime[serve,test]"  # the torch-free runtime, with its server and test extras


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
    session.run(str(BIN / "python"), "-m", "pip", "install", *quiet, "-e", ".[test]", *editable, "-e", RUNTIME,
                *extra, external=True)


def _runtime_tests(session: nox.Session) -> None:
    """Create `.venv-runtime` if needed (no torch in it), install the runtime editable, run its tests there."""
    if not (RUNTIME_BIN / "python").exists():
        session.log(f"creating {RUNTIME_VENV}: the runtime's torch-free environment (onnxruntime, numpy, Pillow)")
        session.run(sys.executable, "-m", "venv", str(RUNTIME_VENV), external=True)
        session.run(str(RUNTIME_BIN / "python"), "-m", "pip", "install", "-q", "--upgrade", "pip", external=True)
    session.run(str(RUNTIME_BIN / "python"), "-m", "pip", "install", "-q", "-e", RUNTIME, external=True)
    session.run(str(RUNTIME_BIN / "python"), "-m", "pytest", "runtime/tests", *session.posargs,
                env={"AD_RUNTIME_REQUIRE_NO_TORCH": "1"}, external=True)


def _pytest(session: nox.Session, *paths: str) -> None:
    session.run(str(BIN / "python"), "-m", "pytest", *paths, *session.posargs, env=TEST_ENV, external=True)


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The runtime's tests in its torch-free environment, then the core and all plugin tests in one run (last, so
    the run's closing line is theirs)."""
    _runtime_tests(session)
    _env(session)
    _pytest(session, "tests", *[f"plugins/{p}/tests" for p in PLUGINS])


@nox.session(python=False)
def runtime(session: nox.Session) -> None:
    """The runtime's tests only, in `.venv-runtime` (without torch)."""
    _runtime_tests(session)


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
    session.run(str(BIN / "ruff"), "check", "ad_core", "tests", "plugins", "runtime", "examples", "benchmarks",
                external=True)
