"""Only the optional mypyc build lives here; everything else is in pyproject.toml.

``LABKIT_COMPILE=1`` compiles ``labkit._compiled.MODULES`` with mypyc (the build backend in
tools/ then asks for mypy); without it this is a plain pure-Python build.
"""

import json
import os
import runpy
from pathlib import Path

from setuptools import setup

ext_modules = []
if os.environ.get("LABKIT_COMPILE") == "1":
    from mypyc.build import mypycify

    compiled = runpy.run_path("labkit/_compiled.py")
    modules = list(compiled["MODULES"])
    # the hashes the runtime guard checks (labkit/_compiled.py), written before compiling
    with open(os.path.join("labkit", compiled["MANIFEST"]), "w") as f:
        json.dump(compiled["source_hashes"](Path(".")), f, indent=1)
    ext_modules = mypycify(
        [
            *modules,
            # pandas has no stubs; other labkit modules are type-checked only as far as the
            # compiled ones use them
            "--ignore-missing-imports",
            "--follow-imports=silent",
            "--disable-error-code=annotation-unchecked",
        ],
        group_name="labkit",
        opt_level=os.environ.get("LABKIT_COMPILE_OPT", "3"),
    )

setup(ext_modules=ext_modules)
