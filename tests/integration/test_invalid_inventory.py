# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A bad inventory stops site.yml before any host is touched.

The directors here are podman containers that do not exist: if the play got
as far as connecting to one, the recap would show it unreachable. Each case
must fail in the controller-side validation with its clear message instead.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from ..conftest import ansible_tool
from ..unit.plugins.module_utils.test_model import INVALID, REPO, load_model

CASES = ["vip not an address", "service vip not a frontend vip", "real server is a vip",
         "duplicate vrid on one interface", "three directors", "equal priorities with preempt",
         "port too high", "duplicate real server", "negative weight", "unknown scheduler",
         "ops with persistence", "real server family differs"]
# What the role's argument spec declares (a choice, a type, a key) Ansible
# checks first, in the validation task it inserts before the role's tasks;
# the model's message for the same case is in test_model.py.
ARGUMENT_SPEC = {"unknown scheduler": "value of scheduler must be one of: rr, wrr, got: lc found in director_services"}


def write_inventory(path, model):
    hosts = {}
    for name, hv in model["directors"].items():
        hosts[name] = {"director_" + k: v for k, v in hv.items()}
        hosts[name]["ansible_connection"] = "containers.podman.podman"
        hosts[name]["ansible_host"] = "ddx-does-not-exist-" + name
    group = {"director_" + k: v for k, v in model.items() if k != "directors"}
    inv = {"all": {"children": {"directors": {"hosts": hosts, "vars": group}}}}
    path.write_text(yaml.safe_dump(inv))


@pytest.fixture(scope="module")
def ansible_playbook():
    exe = ansible_tool("ansible-playbook")
    if not exe or not os.path.isdir(os.path.join(REPO, ".collections", "ansible_collections", "containers")):
        pytest.skip("needs tools/bootstrap.sh (ansible-playbook and containers.podman in .collections)")
    return exe


@pytest.mark.parametrize("case", CASES)
def test_site_stops_before_any_host(tmp_path, ansible_playbook, case):
    model = load_model("lab")
    mutate, where, expected = INVALID[case]
    mutate(model)
    write_inventory(tmp_path / "hosts.yml", model)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".collections"))
    res = subprocess.run([ansible_playbook, "-i", str(tmp_path / "hosts.yml"), "datagram.director.site"],
                         capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    if case in ARGUMENT_SPEC:
        assert "Validation of arguments failed" in out and ARGUMENT_SPEC[case] in out, out
    else:
        assert "The director inventory is invalid; nothing was changed on any host" in out, out
        assert where in out and expected in out
    # Nothing ran on a host: every director failed at validation, none was contacted.
    assert "unreachable=1" not in out and "UNREACHABLE" not in out
    assert "TASK [datagram.director.preflight : Look for IPVS" not in out
