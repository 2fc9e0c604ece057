# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""kernel_settings on the real /proc/sys of a network namespace of its own.

Per-namespace sysctls (net.ipv4.ip_forward, set to 0 first: a new namespace
copies the host's; net.ipv4.ip_local_port_range, a value with two fields)
start at the kernel's defaults in a new namespace, so
the module's check mode, diff, apply, idempotence and drift repair are seen
on the running kernel without touching the host's settings. The module runs
as a play would run it: ``ansible`` ad hoc, with an interpreter that enters
the namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from ..conftest import COLLECTIONS_ROOT, ansible_tool
from ..unit.plugins.module_utils.test_model import REPO

WANTED = {"net.ipv4.ip_forward": 1, "net.ipv4.ip_local_port_range": "20000    40000"}


def sh(*argv):
    return subprocess.run(list(argv), check=True, capture_output=True, text=True).stdout


@pytest.fixture
def namespace(tmp_path):
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 for a network namespace")
    ansible = ansible_tool("ansible")
    if not ansible:
        pytest.skip("needs ansible (tools/bootstrap.sh)")
    name = "ddk" + uuid.uuid4().hex[:8]
    sh("ip", "netns", "add", name)
    try:
        # A new namespace copies the host's IPv4 forwarding (devconf_inherit_init_net=0),
        # which podman's networks turn on: start from the kernel's default 0.
        sh("ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.ip_forward=0")
        interpreter = tmp_path / "python-in-namespace"
        interpreter.write_text('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (name, sys.executable))
        interpreter.chmod(0o755)
        yield {"name": name, "ansible": ansible, "interpreter": str(interpreter), "dir": tmp_path}
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def live(ns, key):
    return " ".join(sh("ip", "netns", "exec", ns["name"], "sysctl", "-n", key).split())


def settings(ns, args, *options):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_ROOT, ANSIBLE_LOAD_CALLBACK_PLUGINS="0")
    res = subprocess.run([ns["ansible"], "localhost", "-i", "localhost,", "-c", "local",
                          "-e", "ansible_python_interpreter=" + ns["interpreter"],
                          "-m", "datagram.director.kernel_settings", "-a", json.dumps(args)] + list(options),
                         capture_output=True, text=True, env=env, cwd=REPO, check=False, timeout=120)
    # "localhost | CHANGED => {...}" or "localhost | FAILED! => {...}"
    head, sep, body = res.stdout.partition(" => ")
    assert sep, res.stdout + res.stderr
    return dict(json.loads(body), failed="FAILED" in head)


def test_check_apply_idempotence_and_drift(namespace):
    ns = namespace
    conf = ns["dir"] / "sysctl.d" / "60-test.conf"
    args = {"sysctls": WANTED, "sysctl_file": str(conf)}
    assert live(ns, "net.ipv4.ip_forward") == "0"
    default_range = live(ns, "net.ipv4.ip_local_port_range")
    assert default_range != "20000 40000"

    checked = settings(ns, args, "--check", "--diff")
    assert checked["changed"] is True
    assert checked["sysctls_set"] == {
        "net.ipv4.ip_forward": {"before": "0", "after": "1"},
        "net.ipv4.ip_local_port_range": {"before": default_range, "after": "20000 40000"}}
    assert checked["files_written"] == [str(conf)]
    assert live(ns, "net.ipv4.ip_forward") == "0" and not conf.exists()

    done = settings(ns, args)
    assert done["changed"] is True and sorted(done["sysctls_set"]) == sorted(WANTED)
    assert live(ns, "net.ipv4.ip_forward") == "1"
    assert live(ns, "net.ipv4.ip_local_port_range") == "20000 40000"
    assert conf.read_text().splitlines()[1:] == ["net.ipv4.ip_forward = 1",
                                                 "net.ipv4.ip_local_port_range = 20000 40000"]

    again = settings(ns, args)
    assert again["changed"] is False and again["sysctls_set"] == {} and again["files_written"] == []

    # drift made by hand: --check sees it, the next run repairs it
    sh("ip", "netns", "exec", ns["name"], "sysctl", "-qw", "net.ipv4.ip_forward=0")
    drift = settings(ns, args, "--check")
    assert drift["changed"] is True
    assert drift["sysctls_set"] == {"net.ipv4.ip_forward": {"before": "0", "after": "1"}}
    assert settings(ns, args)["changed"] is True and live(ns, "net.ipv4.ip_forward") == "1"


def test_refuses_a_sysctl_the_kernel_lacks_before_setting_any(namespace):
    ns = namespace
    res = settings(ns, {"sysctls": {"net.ipv4.ip_forward": 1, "net.ipv4.no_such_setting": 1}})
    assert res.get("failed") is True
    assert "no sysctl net.ipv4.no_such_setting" in res["msg"]
    assert live(ns, "net.ipv4.ip_forward") == "0"


def test_a_module_that_cannot_be_loaded_fails_clearly(namespace):
    ns = namespace
    res = settings(ns, {"modules": ["datagram_director_no_such_module"], "sysctls": {"net.ipv4.ip_forward": 1}})
    assert res.get("failed") is True
    # modprobe's own error where kmod is installed, a clear refusal where it is not
    assert "loading the kernel modules datagram_director_no_such_module" in res["msg"]
    assert live(ns, "net.ipv4.ip_forward") == "0"
