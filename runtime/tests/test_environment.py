"""The runtime needs no torch: its tests run in an environment without it, and this proves that they do."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

REQUIRE_NO_TORCH = "AD_RUNTIME_REQUIRE_NO_TORCH"  # set by `nox -s tests` for its torch-free environment


def test_torch_cannot_be_imported_here() -> None:
    if importlib.util.find_spec("torch") is not None and os.environ.get(REQUIRE_NO_TORCH) != "1":
        pytest.skip("run from the torch environment: `nox -s tests` runs these tests again in .venv-runtime, "
                    f"without torch, where {REQUIRE_NO_TORCH}=1 makes this test assert its absence")
    with pytest.raises(ImportError):
        import torch  # noqa: F401


def test_the_runtime_imports_no_torch() -> None:
    code = ("import sys, ad_runtime, ad_runtime.cli, ad_runtime.server, ad_runtime.overlay; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ad_core', 'timm')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"
