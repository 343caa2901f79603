"""setuptools' build backend, plus mypy as a build requirement when ``LABKIT_COMPILE=1``.

A pure-Python build (the default) does not download mypy.
"""

import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403

MYPY = "mypy==2.4.1"  # the version the compiled build was checked with


def _extra() -> list[str]:
    return [MYPY] if os.environ.get("LABKIT_COMPILE") == "1" else []


def get_requires_for_build_wheel(config_settings=None):  # type: ignore[no-untyped-def]
    return _setuptools.get_requires_for_build_wheel(config_settings) + _extra()


def get_requires_for_build_editable(config_settings=None):  # type: ignore[no-untyped-def]
    return _setuptools.get_requires_for_build_editable(config_settings) + _extra()
