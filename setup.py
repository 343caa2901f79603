"""Only the optional mypyc build lives here; everything else is in pyproject.toml.

``LABKIT_COMPILE=1`` compiles ``labkit._compiled.MODULES`` with mypyc; without it this is a
plain pure-Python build (no mypy needed or downloaded).
"""

import json
import os
import runpy
from pathlib import Path

from setuptools import setup

MYPY = "mypy==2.4.1"  # the version the compiled build was checked with

ext_modules = []
setup_requires = []
if os.environ.get("LABKIT_COMPILE") == "1":
    try:
        from mypyc.build import mypycify
    except ImportError:
        # pip first asks the backend what the build needs (setuptools answers with
        # setup_requires), installs it, then runs this file again to build
        setup_requires = [MYPY]
    else:
        compiled = runpy.run_path("labkit/_compiled.py")
        # the hashes the runtime guard checks (labkit/_compiled.py), written before compiling
        manifest = Path("labkit", compiled["MANIFEST"])
        manifest.write_text(json.dumps(compiled["source_hashes"](Path(".")), indent=1))
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

setup(ext_modules=ext_modules, setup_requires=setup_requires)
