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
import re
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


def ansible_tool(name):
    """Path of an Ansible command (``ansible``, ``ansible-playbook``): the
    bootstrap's .venv first, then PATH; None when there is neither."""
    exe = os.path.join(_REPO, ".venv", "bin", name)
    return exe if os.path.exists(exe) else shutil.which(name)


# --- skip policy ---------------------------------------------------------
# A skip is never the way to a green run: with DD_STRICT_SKIPS set (make
# test), a skip whose reason matches no line of tests/skips-allowed.txt fails
# the run. pytest -rs prints every reason.
_SKIPS = []


def _allowed_skip_patterns():
    path = os.path.join(_REPO, "tests", "skips-allowed.txt")
    with open(path, encoding="utf-8") as f:
        lines = [line.split("#", 1)[0].strip() for line in f]
    return [re.compile(line) for line in lines if line]


def _record_skip(report):
    if report.skipped and isinstance(report.longrepr, tuple):
        _SKIPS.append((report.nodeid, str(report.longrepr[2])))


def pytest_runtest_logreport(report):
    _record_skip(report)


def pytest_collectreport(report):
    # pytest.importorskip and a module-level pytest.skip(allow_module_level)
    # skip a whole file at collection: count those too.
    _record_skip(report)


def _unexplained_skips():
    allowed = _allowed_skip_patterns()
    return [(node, why) for node, why in _SKIPS if not any(p.search(why) for p in allowed)]


def pytest_terminal_summary(terminalreporter):
    if os.environ.get("DD_STRICT_SKIPS") and _unexplained_skips():
        terminalreporter.section("skips not in tests/skips-allowed.txt (the run fails)")
        for node, why in _unexplained_skips():
            terminalreporter.write_line("%s: %s" % (node, why))


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("DD_STRICT_SKIPS") and _unexplained_skips() and exitstatus in (0, 5):
        session.exitstatus = 1
