"""Only the optional mypyc build lives here; everything else is in pyproject.toml.

``LABKIT_COMPILE=1`` compiles ``labkit._compiled.MODULES`` with mypyc; without it this is a
plain pure-Python build (no mypy needed or downloaded).
"""

import json
import os
import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

MYPY = "mypy==2.4.1"  # the version the compiled build was checked with

ext_modules = []
setup_requires = []
cmdclass = {}
if os.environ.get("LABKIT_COMPILE") == "1":
    try:
        from mypyc.build import mypycify
    except ImportError:
        # pip first asks the backend what the build needs (setuptools answers with
        # setup_requires), installs it, then runs this file again to build
        setup_requires = [MYPY]
    else:
        compiled = runpy.run_path("labkit/_compiled.py")
        # the hashes the runtime guard checks (labkit/_compiled.py), of the sources as mypyc
        # reads them now
        hashes = json.dumps(compiled["source_hashes"](Path(".")), indent=1)

        class BuildExtWithManifest(build_ext):
            """Writes the guard's hashes only once the extensions are built: after a failed
            rebuild there are none, so ``import labkit`` refuses the old extensions instead of
            trusting them."""

            def run(self) -> None:
                name = compiled["MANIFEST"]
                targets = [Path("labkit", name)]
                if not self.inplace:  # a wheel: the copy that gets installed
                    targets.append(Path(self.build_lib, "labkit", name))
                for target in targets:
                    target.unlink(missing_ok=True)
                super().run()
                for target in targets:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(hashes)

        cmdclass["build_ext"] = BuildExtWithManifest
        ext_modules = mypycify(
            [
                *compiled["MODULES"],
                # pandas has no stubs; other labkit modules are type-checked only as far as
                # the compiled ones use them
                "--ignore-missing-imports",
                "--follow-imports=silent",
                "--disable-error-code=annotation-unchecked",
            ],
            group_name="labkit",
            opt_level=os.environ.get("LABKIT_COMPILE_OPT", "3"),
        )

setup(ext_modules=ext_modules, setup_requires=setup_requires, cmdclass=cmdclass)
