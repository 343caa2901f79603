"""The optional compiled build (``make compile``: mypyc, ``LABKIT_COMPILE=1``) behaves exactly as
pure Python.

Compiled code checks declared types at run time and refuses some dynamic tricks (pickling
frozen dataclasses, patching methods), so a wrong annotation only fails on the path that reaches
it. Here the build is made the way ``make compile`` makes it, but in a copy of the package under
``build/compiled/`` (never beside the sources, so the tests elsewhere keep running the code as
written; the pure side runs from a plain copy, ``build/pure/``), and checked: it is compiled;
every shipped scenario gives bit-identical results in both builds; the core, scenario and
simulator tests pass against it; and an edited source beside a compiled module, or compiled
modules whose shared library is gone, are refused at import.

Without a C compiler or mypy this skips, except under ``LABKIT_REQUIRE_COMPILED=1`` (``.ci/run``
sets it), where it fails instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from labkit._compiled import MODULES

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "compiled"
BUILD_TIMEOUT_S = 1200  # ≈ 1 min of gcc on a quiet 2-core machine, several on a busy one
#: what runs against the compiled build besides the fingerprints: everything the compiled
#: modules are exercised by, without live processes or notebooks
SUITES = ("test_core_*.py", "test_sim_*.py", "test_scenario*.py", "test_distributions.py")

pytestmark = pytest.mark.timeout(BUILD_TIMEOUT_S + 900)


def _unavailable() -> str | None:
    if importlib.util.find_spec("mypyc") is None:
        return "mypy (mypyc) is not installed"
    if shutil.which(os.environ.get("CC", "cc")) is None and shutil.which("gcc") is None:
        return "no C compiler"
    return None


def _build_key() -> str:
    """Every labkit source (compiled code is typed against the interpreted modules it uses),
    the build script, the compiler's version and the Python it builds for: a change to any of
    them needs a new build."""
    import mypy.version

    h = hashlib.sha256(mypy.version.__version__.encode())
    h.update(f"{sys.version} {sysconfig.get_config_var('EXT_SUFFIX')}".encode())
    for path in (*sorted((ROOT / "labkit").rglob("*.py")), ROOT / "setup.py"):
        h.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def _copy_sources(dest: Path, names: tuple[str, ...] = ("labkit", "tests", "scenarios")) -> None:
    """A checkout in miniature: the package, the tests and the scenarios they read, so that
    anything run there (pytest included, which puts its rootdir first on ``sys.path``) imports
    that copy of the package, whatever the checkout itself holds (even a `make compile`)."""
    for name in names:
        shutil.rmtree(dest / name, ignore_errors=True)  # nothing left from an older copy
        shutil.copytree(
            ROOT / name,
            dest / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.so", "_compiled_manifest.json"),
        )


def _build(dest: Path) -> None:
    """``make compile``'s build (setup.py with LABKIT_COMPILE=1), in place in ``dest``; on a
    timeout the whole process group goes, gcc included."""
    proc = subprocess.Popen(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=dest,
        env={**_env(None), "LABKIT_COMPILE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, output[-6000:]


def _env(root: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if root is not None:
        env["PYTHONPATH"] = str(root)  # ahead of the editable install's finder
    return env


@pytest.fixture(scope="module")
def compiled_root() -> Path:
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("LABKIT_REQUIRE_COMPILED") == "1":
            pytest.fail(f"LABKIT_REQUIRE_COMPILED=1 but {reason}")
        pytest.skip(reason)
    dest = BUILD / _build_key()
    if not (dest / "built").exists():
        shutil.rmtree(BUILD, ignore_errors=True)  # one build kept
        dest.mkdir(parents=True)
        _copy_sources(dest)
        for name in ("setup.py", "pyproject.toml"):
            shutil.copy2(ROOT / name, dest / name)
        _build(dest)
        (dest / "built").touch()
    else:
        _copy_sources(dest, ("tests", "scenarios"))  # the package is the key's
    return dest


@pytest.fixture(scope="module")
def pure_root(compiled_root: Path) -> Path:
    """The same sources without the build, for the other side of the comparison."""
    dest = BUILD.parent / "pure"
    _copy_sources(dest)
    return dest


def _python(
    root: Path, *args: str, timeout: float = 600, expect_compiled: bool = False
) -> subprocess.CompletedProcess:
    """Run Python in a copy of the checkout (``root``), with it first on the path."""
    env = _env(root)
    if expect_compiled:
        env["LABKIT_EXPECT_COMPILED"] = "1"  # tests/conftest.py refuses a pure import
    return subprocess.run(
        [sys.executable, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_build_compiles_every_listed_module(compiled_root: Path) -> None:
    code = (
        "import json, labkit, labkit.sim.driver; from labkit._compiled import compiled_modules, "
        "is_compiled; print(json.dumps([labkit.__file__, is_compiled(), compiled_modules()]))"
    )
    done = _python(compiled_root, "-c", code)
    assert done.returncode == 0, done.stderr[-3000:]
    where, compiled, modules = json.loads(done.stdout)
    assert Path(where).is_relative_to(compiled_root)
    assert compiled is True and modules == list(MODULES)


def test_every_shipped_scenario_gives_identical_results_compiled(
    compiled_root: Path, pure_root: Path
) -> None:
    script = Path("tests", "fingerprint_outputs.py")
    folder = str(ROOT / "scenarios")  # the same paths: the summaries name their files
    pure = _python(pure_root, str(pure_root / script), folder)
    compiled = _python(compiled_root, str(compiled_root / script), folder)
    assert pure.returncode == 0, pure.stderr[-3000:]
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    a, b = json.loads(pure.stdout), json.loads(compiled.stdout)
    assert a["compiled"] is False and b["compiled"] is True
    assert len(a["scenarios"]) == len(list((ROOT / "scenarios").glob("*.yaml")))
    differ = {
        name: [part for part in parts if parts[part] != b["scenarios"].get(name, {}).get(part)]
        for name, parts in a["scenarios"].items()
        if parts != b["scenarios"].get(name)
    }
    assert not differ, f"compiled results differ from pure Python: {differ}"


def test_core_scenario_and_simulator_tests_pass_compiled(compiled_root: Path) -> None:
    tests = compiled_root / "tests"
    files = sorted({str(p.relative_to(compiled_root)) for s in SUITES for p in tests.glob(s)})
    args = ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files]
    done = _python(compiled_root, *args, timeout=900, expect_compiled=True)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert " passed" in done.stdout


def _installed_copy(compiled_root: Path, tmp_path: Path) -> Path:
    """The compiled package alone, to break on purpose."""
    copy = tmp_path / "compiled"
    shutil.copytree(
        compiled_root, copy, ignore=shutil.ignore_patterns("build", "tests", "__pycache__")
    )
    return copy


def test_an_edited_source_beside_a_compiled_module_is_refused(
    compiled_root: Path, tmp_path: Path
) -> None:
    copy = _installed_copy(compiled_root, tmp_path)
    edited = copy / "labkit" / "core" / "routing.py"
    edited.write_text(edited.read_text() + "\n# an edit after the build\n")
    done = _python(copy, "-c", "import labkit")
    assert done.returncode != 0
    assert "stale" in done.stderr and "labkit/core/routing.py" in done.stderr
    assert "make compile" in done.stderr


def test_compiled_modules_without_their_shared_library_are_refused(
    compiled_root: Path, tmp_path: Path
) -> None:
    copy = _installed_copy(compiled_root, tmp_path)
    for library in copy.glob("labkit__mypyc*"):
        library.unlink()
    done = _python(copy, "-c", "import labkit")
    assert done.returncode != 0
    assert "labkit__mypyc cannot be imported" in done.stderr, done.stderr[-2000:]
