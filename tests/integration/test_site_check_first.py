# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""site.yml checks a change on both directors before it changes either.

Each "director" is a network namespace made here, reached by Ansible's local
connection through a python wrapper that enters it, so the real nft --check
and keepalived --config-test see that director's interfaces. site.yml runs in
check mode: should the check let the play through, nothing is changed. A
change one director rejects must fail the play with that check's first line
and stop it before the first role, on both directors.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from .test_invalid_inventory import ansible_playbook  # noqa: F401  pylint: disable=unused-import
from ..unit.plugins.module_utils.test_model import REPO, load_model

FIRST_ROLE_TASK = "TASK [datagram.director.nftables : Install nftables]"


def ip(*args):
    subprocess.run(["ip"] + list(args), check=True, capture_output=True, timeout=10)


@pytest.fixture
def pair(tmp_path):
    """Two namespaces with the lab's interfaces; the test removes what it names."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "keepalived")):
        pytest.skip("needs root, iproute2, nftables and keepalived")
    model = load_model("lab")
    names = sorted(model["directors"])
    spaces = {}
    for n, host in enumerate(names):
        ns = "ddcheck%d-%d" % (os.getpid(), n)
        ip("netns", "add", ns)
        spaces[host] = ns
        wrapper = tmp_path / ("python-" + ns)
        wrapper.write_text('#!/bin/sh\nexec ip netns exec %s /usr/bin/python3 "$@"\n' % ns)
        wrapper.chmod(0o755)
    yield model, names, spaces, tmp_path
    for ns in spaces.values():
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=10)


def add_link(ns, name):
    ip("-n", ns, "link", "add", name, "type", "veth", "peer", "name", name[:13] + "-p")


def run_site(model, spaces, tmp_path, exe, extra=None):
    hosts = {}
    for name, hv in model["directors"].items():
        hosts[name] = {"director_" + k: v for k, v in hv.items()}
        hosts[name].update(ansible_connection="local",
                           ansible_python_interpreter=str(tmp_path / ("python-" + spaces[name])))
    group = {"director_" + k: v for k, v in model.items() if k != "directors"}
    inv = {"all": {"children": {"directors": {"hosts": hosts, "vars": group}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inv))
    argv = [exe, "-i", str(tmp_path / "hosts.yml"), "datagram.director.site", "--check"]
    if extra:
        argv += ["-e", extra]
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".collections"))
    res = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=300)
    return res.returncode, res.stdout + res.stderr


def test_interface_on_one_director_only(pair, ansible_playbook):  # noqa: F811  pylint: disable=redefined-outer-name
    model, names, spaces, tmp_path = pair
    model["data_plane"] = "nftables"
    # The first director has both interfaces, the second only the backend one.
    add_link(spaces[names[0]], model["frontend_interface"])
    for ns in spaces.values():
        add_link(ns, model["backend_interface"])
    rc, out = run_site(model, spaces, tmp_path, ansible_playbook)
    assert rc != 0, out
    assert "nft --check failed on %s: " % names[1] in out, out
    assert "Interface does not exist" in out, out
    assert "no director was changed" in out, out
    assert "failed on %s" % names[0] not in out, out
    assert FIRST_ROLE_TASK not in out, out


def test_keepalived_rejects_on_both(pair, ansible_playbook):  # noqa: F811  pylint: disable=redefined-outer-name
    model, names, spaces, tmp_path = pair
    model["data_plane"] = "nftables"
    for ns in spaces.values():
        add_link(ns, model["frontend_interface"])
        add_link(ns, model["backend_interface"])
    # An absolute path passes the plan; keepalived refuses a notify script it
    # cannot run as its script user (none is configured or present).
    rc, out = run_site(model, spaces, tmp_path, ansible_playbook,
                       '{"director_vrrp_notify": {"master": "/usr/local/sbin/datagram-director-test-notify"}}')
    assert rc != 0, out
    for host in names:
        assert "keepalived --config-test failed on %s: " % host in out, out
    assert "nft --check failed" not in out, out
    assert FIRST_ROLE_TASK not in out, out
