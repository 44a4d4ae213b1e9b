"""Shared pieces of the Python tests (pytest; Debian: python3-pytest).

Run from the source tree against a build:
    LIBSAE_PATH=build/libsae.so.0 /usr/bin/python3 -m pytest tests/python
CTest does the same (tests/python/CMakeLists.txt). The package is imported
from python/ unless LIBSAE_TEST_INSTALLED=1 (then from wherever Python finds
it: an installed copy).
"""
import os
import sys

import numpy as np
import pytest

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
if os.environ.get("LIBSAE_TEST_INSTALLED") != "1":
    sys.path.insert(0, os.path.join(SOURCE_DIR, "python"))
sys.path.insert(0, HERE)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
