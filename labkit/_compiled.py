"""The optional mypyc build of the simulator's hot path, and its guard against stale builds.

``LABKIT_COMPILE=1 pip install .`` (or ``make compile`` in a checkout) compiles the modules in
``MODULES`` with mypyc from the same Python source; without it labkit is pure Python. A compiled
module is a ``.so`` beside its ``.py``, and Python imports the ``.so`` first: after an edit to the
``.py`` the old build would keep running, silently. So the build records a hash of every source
it compiled (``MANIFEST``), and ``check()`` (run when labkit is imported) refuses to go on when a
compiled module's source no longer matches it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

#: the modules compiled by ``LABKIT_COMPILE=1`` (the idealized benchmark's hot path)
MODULES = (
    "labkit/sim/driver.py",
    "labkit/sim/workload.py",
    "labkit/core/balancing.py",
    "labkit/core/registry.py",
    "labkit/core/routing.py",
    "labkit/core/gateway.py",
    "labkit/results/records.py",
)
MANIFEST = "_compiled_manifest.json"
#: the one library mypyc builds for all of them (``group_name="labkit"`` in setup.py)
SHARED_LIBRARY = "labkit__mypyc"
_ROOT = Path(__file__).resolve().parent  # the labkit package


def source_hashes(root: Path) -> dict[str, str]:
    """sha256 of each module in ``MODULES``, by path, under the directory holding ``labkit``."""
    return {m: hashlib.sha256((root / m).read_bytes()).hexdigest() for m in MODULES}


def _extensions(module: str) -> list[Path]:
    py = _ROOT.parent / module
    return list(py.parent.glob(py.stem + ".*.so")) + list(py.parent.glob(py.stem + ".*.pyd"))


def compiled_modules() -> list[str]:
    """The modules of ``MODULES`` that have a compiled extension installed beside them."""
    return [m for m in MODULES if _extensions(m)]


def check() -> None:
    """Raise ImportError if a compiled module was built from a different source than its .py."""
    compiled = compiled_modules()
    if not compiled:
        return
    if importlib.util.find_spec(SHARED_LIBRARY) is None:
        # e.g. a plain `pip install -e .` after `make compile`: the modules' stubs are there,
        # the library with their code is no longer on the path
        raise ImportError(
            f"labkit: compiled extensions are installed but their shared library "
            f"{SHARED_LIBRARY} cannot be imported. Rebuild them (`make compile`) or remove "
            "them (`make uncompile`)."
        )
    try:
        recorded = json.loads((_ROOT / MANIFEST).read_text())
    except (OSError, ValueError):
        recorded = {}
    now = source_hashes(_ROOT.parent)
    stale = [m for m in compiled if recorded.get(m) != now[m]]
    if stale:
        raise ImportError(
            "labkit: compiled extensions are stale (built from other sources than "
            + ", ".join(stale)
            + "). Rebuild them (`make compile`) or remove them (`make uncompile`)."
        )


def is_compiled() -> bool:
    """True when the simulator's driver runs compiled (mypyc), False for pure Python."""
    driver = sys.modules.get("labkit.sim.driver")
    if driver is None:
        import labkit.sim.driver as driver
    return not str(driver.__file__).endswith(".py")
