# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Make ``import ansible_collections.datagram.director`` work under plain pytest.

If the repository already sits at ``.../ansible_collections/datagram/director``
(as under ``ansible-test units``) its grandparent's parent is used; otherwise a
temporary ``ansible_collections/datagram/director`` symlink to the repository
root is made.  The directory is put on ``sys.path`` and offered as the
``collections_path`` fixture (for ANSIBLE_COLLECTIONS_PATH).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _collections_path():
    parent = os.path.dirname(REPO_ROOT)
    if os.path.basename(parent) == 'datagram' and os.path.basename(os.path.dirname(parent)) == 'ansible_collections':
        return os.path.dirname(os.path.dirname(parent))
    tmp = tempfile.mkdtemp(prefix='datagram-director-tests-')
    atexit.register(shutil.rmtree, tmp, True)
    os.makedirs(os.path.join(tmp, 'ansible_collections', 'datagram'))
    os.symlink(REPO_ROOT, os.path.join(tmp, 'ansible_collections', 'datagram', 'director'))
    return tmp


COLLECTIONS_PATH = _collections_path()
if COLLECTIONS_PATH not in sys.path:
    sys.path.insert(0, COLLECTIONS_PATH)


@pytest.fixture
def collections_path():
    return COLLECTIONS_PATH
