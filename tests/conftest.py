# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make ``ansible_collections.datagram.director`` importable for every test
directory (tests/unit has its own conftest doing the same; this one also
covers tests/integration).

The repo root is the collection root, but Python needs the
``ansible_collections/<namespace>/<name>`` layout to import it under the name
the plugins use: use the real layout when the checkout already sits in one
(ansible-test), otherwise build it once per session with a symlink.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _collections_root():
    parent = os.path.dirname(_REPO)
    if os.path.basename(parent) == "datagram" and os.path.basename(os.path.dirname(parent)) == "ansible_collections":
        return os.path.dirname(os.path.dirname(parent))
    root = tempfile.mkdtemp(prefix="dgd-collections-")
    # rmtree unlinks the symlink, it never follows it into the repo.
    atexit.register(shutil.rmtree, root, True)
    os.makedirs(os.path.join(root, "ansible_collections", "datagram"))
    os.symlink(_REPO, os.path.join(root, "ansible_collections", "datagram", "director"))
    return root


COLLECTIONS_ROOT = _collections_root()
if COLLECTIONS_ROOT not in sys.path:
    sys.path.insert(0, COLLECTIONS_ROOT)
