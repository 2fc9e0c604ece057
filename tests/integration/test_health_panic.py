# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health program as a director runs it (the files the health role
installs, side by side, real probes, real nft) when every real server fails
its check: the healthy panic threshold, and with it off the drop.

Everything runs in a network namespace made by the test (``unshare -n``): the
real servers' addresses 203.0.113.21-23 on its loopback, nothing listening at
first (every check fails: ICMP port unreachable), then a UDP echo on .22 (one
passes again); a table ``netdev datagram_director`` holds the chains the
program's dispatch jumps to. Needs root, iproute2, nftables and unshare.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from ansible_collections.datagram.director.plugins.module_utils.model import build_plan

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ECHO = os.path.join(REPO, "roles", "lab_realserver", "files", "datagram-echo")  # the project's one echo
FILES = [os.path.join(REPO, "plugins", "module_utils", name) for name in ("health.py", "health_apply.py", "ipvsadm.py", "model.py")] \
    + [os.path.join(REPO, "roles", "health", "files", "datagram_director_health.py")]
RS = ("203.0.113.21", "203.0.113.22", "203.0.113.23")

TABLE = """table netdev datagram_director {
  chain rs_echo_0 { counter; }
  chain rs_echo_1 { counter; }
  chain rs_echo_2 { counter; }
  chain svc_echo { drop comment "static"; }
}
"""


# In the namespace: the table, the addresses, the program; after 4 s (every
# check failed, the hold over) a copy of its state and the dispatch chain;
# then the echo on .22; after 4 s more the same again; stop, by PID.
SCRIPT = r"""
set -e
ip link set lo up
for a in {rs}; do ip address add $a/24 dev lo; done
nft -f {dir}/table.nft
python3 {dir}/datagram_director_health.py --config {dir}/health.json > {dir}/out.log 2>&1 &
prog=$!
sleep 4
cp {dir}/state.json {dir}/state-1.json
nft list chain netdev datagram_director svc_echo > {dir}/chain-1.txt
python3 {echo} --no-name --listen 203.0.113.22:7000 &
echo=$!
sleep 4
cp {dir}/state.json {dir}/state-2.json
nft list chain netdev datagram_director svc_echo > {dir}/chain-2.txt
kill $prog $echo
wait $prog || true
"""


def _config(tmp, threshold):
    model = {
        "frontend_interface": "front", "backend_interface": "back", "frontend_vrid": 51, "backend_vrid": 52,
        "frontend_vips": ["198.51.100.10/24"], "backend_gateway_vips": ["203.0.113.10/24"],
        "directors": {"d1": {"vrrp_priority": 150, "frontend_address": "198.51.100.11", "backend_address": "203.0.113.11"},
                      "d2": {"vrrp_priority": 100, "frontend_address": "198.51.100.12", "backend_address": "203.0.113.12"}},
        "services": [{"name": "echo", "vip": "198.51.100.10", "port": 7000, "panic_threshold": threshold,
                      "health_check": {"type": "udp", "interval": 1, "timeout": 1, "fall": 1, "rise": 1},
                      "real_servers": [{"address": a, "port": 7000} for a in RS]}],
    }
    plan = build_plan(model)
    return {"data_plane": "nftables", "nftables_table": "datagram_director", "reconcile_interval": 5,
            "state_file": str(tmp / "state.json"), "textfile": str(tmp / "health.prom"),
            "drain_file": str(tmp / "drain.json"), "services": plan["services"]}


def _run(tmp, threshold):
    for path in FILES:
        shutil.copy(path, str(tmp))
    (tmp / "health.json").write_text(json.dumps(_config(tmp, threshold)))
    (tmp / "table.nft").write_text(TABLE)
    script = SCRIPT.format(dir=str(tmp), rs=" ".join(RS), echo=ECHO)
    proc = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out = (tmp / "out.log").read_text()
    phases = [(json.loads((tmp / ("state-%d.json" % n)).read_text())["services"][0],
               (tmp / ("chain-%d.txt" % n)).read_text()) for n in (1, 2)]
    return out, phases


def _targets(chain):
    return sorted(set(re.findall(r"goto (rs_echo_\d)", chain)))


@pytest.fixture(autouse=True)
def _needs():
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("ip", "nft", "unshare", "bash")):
        pytest.skip("needs root, iproute2, nftables and unshare for a network namespace")
    if sys.version_info < (3, 9):
        pytest.skip("the health program needs Python 3.9")


def test_every_check_fails_panic_spreads_over_all(tmp_path):
    out, ((state1, chain1), (state2, chain2)) = _run(tmp_path, 1)
    # every check failed: panic, the dispatch over all three, logged, in the state
    assert [rs["up"] for rs in state1["real_servers"]] == [False, False, False]
    assert (state1["panic"], state1["healthy_weight"], state1["total_weight"]) == (True, 0, 3)
    assert state1["applied"] == [1, 1, 1]
    assert _targets(chain1) == ["rs_echo_0", "rs_echo_1", "rs_echo_2"] and "numgen inc mod 3" in chain1
    assert re.search(r"<4>echo PANIC: real servers passing their check carry weight 0 of 3 \(0\.0 %, threshold 1 %\)", out)
    # .22 answers again: panic over, only it in the dispatch
    assert [rs["up"] for rs in state2["real_servers"]] == [False, True, False]
    assert (state2["panic"], state2["applied"]) == (False, [0, 1, 0])
    assert _targets(chain2) == ["rs_echo_1"]
    assert re.search(r"<5>echo panic over: passing weight 1 of 3 \(33\.3 %, threshold 1 %\), weights \[0, 1, 0\]", out)
    assert 'datagram_director_service_panic{service="echo"} 0' in (tmp_path / "health.prom").read_text()


def test_policy_off_drops(tmp_path):
    """The negative control: panic_threshold 0, every check failing -> drop."""
    out, ((state1, chain1), (state2, chain2)) = _run(tmp_path, 0)
    assert (state1["panic"], state1["applied"]) == (False, [0, 0, 0])
    assert _targets(chain1) == [] and re.search(r"\sdrop comment \"datagram-director-health echo ", chain1)
    assert "PANIC" not in out and "panic over" not in out
    assert (state2["panic"], state2["applied"], _targets(chain2)) == (False, [0, 1, 0], ["rs_echo_1"])
