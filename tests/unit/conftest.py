# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``collections_path`` fixture (for ANSIBLE_COLLECTIONS_PATH); the import
layout itself is set up once, by tests/conftest.py."""

from __future__ import annotations

import pytest

from ..conftest import COLLECTIONS_ROOT


@pytest.fixture
def collections_path():
    return COLLECTIONS_ROOT
