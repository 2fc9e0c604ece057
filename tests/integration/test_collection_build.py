# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collection builds, installs, and its playbooks, roles and plugins resolve
by FQCN from the installed copy (not from this checkout); the lab playbooks do
not (the tarball's file list: tests/unit/test_collection_artifact.py)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

from ..unit.plugins.module_utils.test_model import REPO


def tool(name):
    exe = os.path.join(REPO, ".venv", "bin", name)
    return exe if os.path.exists(exe) else shutil.which(name)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if not tool("ansible-galaxy"):
        pytest.skip("needs ansible-core (tools/bootstrap.sh)")
    tmp = tmp_path_factory.mktemp("galaxy")
    subprocess.run([tool("ansible-galaxy"), "collection", "build", "--output-path", str(tmp), REPO],
                   check=True, capture_output=True, text=True)
    tarball = glob.glob(str(tmp / "datagram-director-*.tar.gz"))
    assert len(tarball) == 1
    dest = tmp / "collections"
    subprocess.run([tool("ansible-galaxy"), "collection", "install", "--force", "--collections-path", str(dest), tarball[0]],
                   check=True, capture_output=True, text=True)
    return tarball[0], dest


def test_fqcns_resolve_from_the_installed_collection(installed, tmp_path):
    dest = installed[1]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(dest), ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_CONFIG", None)
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    directors:\n      hosts: {a: {}, b: {}}\n    clients:\n      hosts: {c: {}}\n")
    for playbook in ("site", "verify", "flush_stuck", "realserver", "lab", "failover"):
        res = subprocess.run([tool("ansible-playbook"), "--syntax-check", "-i", str(inv), "datagram.director." + playbook],
                             capture_output=True, text=True, env=env, cwd=str(tmp_path), check=False)
        # The lab and the drills stay in the checkout (tests/unit/test_collection_artifact.py).
        assert (res.returncode == 0) == (playbook not in ("lab", "failover")), playbook + res.stdout + res.stderr
    for kind, name in (("module", "udp_spread"), ("module", "udp_flow_info"), ("module", "udp_probe"),
                       ("module", "director_plan"), ("callback", "stuck_udp"), ("filter", "spread_check"),
                       ("role", "vrrp")):
        res = subprocess.run([tool("ansible-doc"), "-t", kind, "datagram.director." + name],
                             capture_output=True, text=True, env=env, cwd=str(tmp_path), check=False)
        assert res.returncode == 0 and name in res.stdout, res.stderr
        if kind != "role":  # ansible-doc shows where it found the plugin
            assert str(dest) in res.stdout, res.stdout[:300]
