# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plan -> engine configuration, health states -> nft / ipvsadm, and the
health program's loop against a fake data plane."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from ansible_collections.datagram.director.plugins.module_utils import health
from ansible_collections.datagram.director.plugins.module_utils import health_apply as ha
from ansible_collections.datagram.director.plugins.module_utils.model import build_plan, ModelError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def model(services):
    return {
        "frontend_interface": "front", "backend_interface": "back",
        "frontend_vrid": 51, "backend_vrid": 52,
        "frontend_vips": ["198.51.100.10/24", "2001:db8:51::10/64"],
        "backend_gateway_vips": ["203.0.113.10/24", "2001:db8:113::10/64"],
        "directors": {"d1": {"vrrp_priority": 150, "frontend_address": "198.51.100.11", "backend_address": "203.0.113.11"},
                      "d2": {"vrrp_priority": 100, "frontend_address": "198.51.100.12", "backend_address": "203.0.113.12"}},
        "services": services,
    }


ECHO = {"name": "echo", "vip": "198.51.100.10", "port": 7000,
        "health_check": {"type": "udp", "interval": 1, "timeout": 1, "fall": 2, "rise": 2},
        "real_servers": [{"address": "203.0.113.%d" % n, "port": 7000} for n in (21, 22, 23)]}
NETFLOW = {"name": "netflow", "vip": "198.51.100.10", "port": 2055, "scheduler": "wrr",
           "health_check": {"type": "tcp", "port": 9100},
           "real_servers": [{"address": "203.0.113.21", "port": 2055, "weight": 2},
                            {"address": "203.0.113.22", "port": 2055, "weight": 1},
                            {"address": "203.0.113.23", "port": 2055, "weight": 1}]}
SYSLOG6 = {"name": "syslog6", "vip": "2001:db8:51::10", "port": 514,
           "real_servers": [{"address": "2001:db8:113::21", "port": 514}]}


def config(services, data_plane="nftables"):
    plan = build_plan(model(services))
    return {"data_plane": data_plane, "nftables_table": "datagram_director",
            "services": [s for s in plan["services"] if s["health_check"]["type"] in ha.ENGINE_TYPES]}


class FakeState:
    def __init__(self, up=True, weight=1, drain=False):
        self.up, self.weight, self.drain = up, weight, drain
        self.reason, self.rtt, self.checks = "ok", 0.001, 3

    @property
    def effective_weight(self):
        return self.weight if self.up and not self.drain else 0


# --- model: health_check validation -----------------------------------------

@pytest.mark.parametrize("hc", [
    {"type": "udp", "payload": "ping", "expect": "pong"},
    {"type": "dns", "query_name": "example.org", "query_type": "A", "expect_rcode": "NOERROR"},
    {"type": "radius", "secret": "s3cret"},
    {"type": "ntp"}, {"type": "sip", "sip_uri": "sip:ping@example.org"},
    {"type": "tcp", "port": 9100}, {"type": "http", "port": 8080, "http_path": "/health", "expect_status": [200, 204]},
    {"type": "none"}, {"type": "misc", "script": "/usr/local/bin/check"},
])
def test_model_accepts_engine_types(hc):
    svc = dict(ECHO, health_check=hc)
    plan = build_plan(model([svc]))
    assert plan["services"][0]["health_check"]["type"] == hc["type"]


@pytest.mark.parametrize("hc, message", [
    ({"type": "icmp"}, "director_services[0].health_check.type: got 'icmp', expected one of none, udp, dns"),
    ({"type": "radius"}, "health_check.secret: got '(not set)', expected the RADIUS shared secret"),
    ({"type": "udp", "query_name": "x"}, "health_check.query_name: got 'x', expected no such option for a udp health check"),
    ({"type": "udp", "secret": "leak"}, "health_check.secret: got '(hidden)'"),
    ({"type": "udp", "timeout": 5, "interval": 2}, "health_check.timeout: got 5, expected at most health_check.interval (2)"),
    ({"type": "udp", "payload_hex": "zz"}, "health_check.payload_hex: got 'zz', expected hexadecimal bytes"),
    ({"type": "udp", "expect": "("}, "health_check.expect: got '(', expected a regular expression"),
    ({"type": "tcp", "port": 70000}, "health_check.port: got 70000, expected an integer from 1 to 65535"),
    ({"type": "http", "expect_status": [700]}, "health_check.expect_status: got [700], expected HTTP status codes"),
])
def test_model_rejects_bad_health_checks(hc, message):
    with pytest.raises(ModelError) as err:
        build_plan(model([dict(ECHO, health_check=hc)]))
    assert message in str(err.value)
    assert "leak" not in str(err.value)


def test_default_health_check_is_none():
    plan = build_plan(model([SYSLOG6]))
    assert plan["services"][0]["health_check"]["type"] == "none"


# --- engine configuration ------------------------------------------------------

def test_engine_config_names_ports_and_weights():
    cfg = config([ECHO, NETFLOW, SYSLOG6])
    servers = ha.engine_config(cfg, {"echo": ["203.0.113.22"]})["servers"]
    assert [s["name"] for s in servers] == ["echo_0", "echo_1", "echo_2", "netflow_0", "netflow_1", "netflow_2"]
    assert servers[0]["probe"] == {"type": "udp", "port": 7000}
    assert servers[3]["probe"] == {"type": "tcp", "port": 9100}   # health_check.port wins
    assert [s["weight"] for s in servers] == [1, 1, 1, 2, 1, 1]
    assert [s["drain"] for s in servers] == [False, True, False, False, False, False]
    assert (servers[0]["rise"], servers[0]["fall"], servers[0]["interval"]) == (2, 2, 1)
    engine = health.HealthEngine(ha.engine_config(cfg))  # the engine accepts it
    engine.close()


def test_rr_weights_are_one_slot_each():
    svc = dict(ECHO, real_servers=[dict(r, weight=w) for r, w in zip(ECHO["real_servers"], (5, 0, 1))])
    assert [ha.scheduling_weight(svc, rs) for rs in svc["real_servers"]] == [1, 0, 1]


@pytest.mark.parametrize("item, drained", [
    ("203.0.113.21", True), ("203.0.113.21:7000", True), ("203.0.113.21:7001", False), ("203.0.113.2", False)])
def test_drained_matches_address_and_port(item, drained):
    svc = config([ECHO])["services"][0]
    assert ha.drained({"echo": [item]}, svc, svc["real_servers"][0]) is drained


def test_drained_ipv6():
    svc = {"name": "s6", "real_servers": [{"address": "2001:db8:113::21", "port": 514}]}
    for item in ("2001:db8:113::21", "[2001:DB8:113::21]:514"):
        assert ha.drained({"s6": [item]}, svc, svc["real_servers"][0])


def test_parse_drains():
    assert ha.parse_drains("") == {}
    assert ha.parse_drains('{"echo": ["203.0.113.21"]}') == {"echo": ["203.0.113.21"]}
    with pytest.raises(ValueError):
        ha.parse_drains('["echo"]')


# --- drain and enable (datagram-director-health --drain/--enable) -----------------

def test_drain_change_adds_once_and_enable_removes_every_entry_naming_it():
    cfg = config([ECHO, NETFLOW])
    new, idx = ha.drain_change(cfg, {}, "echo", "203.0.113.22", True)
    assert (new, idx) == ({"echo": ["203.0.113.22"]}, [1])
    # already drained, whichever way it is named: no change
    assert ha.drain_change(cfg, new, "echo", "203.0.113.22:7000", True)[0] == new
    both = {"echo": ["203.0.113.22", "203.0.113.22:7000", "203.0.113.23"], "netflow": ["203.0.113.22"]}
    new, idx = ha.drain_change(cfg, both, "echo", " 203.0.113.22:7000 ", False)
    assert (new, idx) == ({"echo": ["203.0.113.23"], "netflow": ["203.0.113.22"]}, [1])
    new, _idx = ha.drain_change(cfg, new, "echo", "203.0.113.23", False)
    assert new == {"netflow": ["203.0.113.22"]}
    assert ha.drain_change(cfg, {}, "echo", "203.0.113.21", False)[0] == {}


def test_drain_change_ipv6():
    svc = {"name": "s6", "vip": "2001:db8:51::10", "port": 514, "health_check": {"type": "udp"},
           "real_servers": [{"address": "2001:db8:113::21", "port": 514}, {"address": "2001:db8:113::22", "port": 514}]}
    new, idx = ha.drain_change({"services": [svc]}, {}, "s6", "[2001:DB8:113::22]:514", True)
    assert (new, idx) == ({"s6": ["[2001:db8:113::22]:514"]}, [1])
    assert ha.drain_change({"services": [svc]}, new, "s6", "2001:db8:113::22", False)[0] == {}


@pytest.mark.parametrize("service, rs, message", [
    ("dns", "203.0.113.21", "service 'dns' is not checked by the health program (checked: echo)"),
    ("echo", "203.0.113.24", "'203.0.113.24' is not a real server of echo (real servers: 203.0.113.21:7000, "
                             "203.0.113.22:7000, 203.0.113.23:7000)"),
    ("echo", "203.0.113.21:7001", "is not a real server of echo"),
    ("echo", "203.0.113.21:x", "is not a real server of echo"),
])
def test_drain_change_refuses_what_is_not_there(service, rs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ha.drain_change(config([ECHO]), {}, service, rs, True)


def test_drain_applied_needs_the_flag_and_the_applied_weights():
    cfg = config([ECHO])
    states = {"echo_0": FakeState(True, 1), "echo_1": FakeState(True, 1, drain=True), "echo_2": FakeState(True, 1)}
    assert ha.drain_applied(ha.status_document(cfg, states, {}, {"echo": [1, 0, 1]}), "echo", [1], True)
    # seen by the engine but not yet in the data plane
    assert not ha.drain_applied(ha.status_document(cfg, states, {}, {"echo": [1, 1, 1]}), "echo", [1], True)
    assert not ha.drain_applied(ha.status_document(cfg, states, {}, {"echo": [1, 0, 1]}), "echo", [1], False)
    assert not ha.drain_applied(None, "echo", [1], True)
    assert not ha.drain_applied({"services": []}, "echo", [1], True)


# --- nftables --------------------------------------------------------------------

def test_nft_dispatch_keeps_places_and_smooth_order():
    svc = config([NETFLOW])["services"][0]
    script = ha.nft_dispatch("datagram_director", svc, [2, 1, 1])
    lines = script.splitlines()
    assert lines[0] == "flush chain netdev datagram_director svc_netflow"
    assert lines[1].startswith("add rule netdev datagram_director svc_netflow numgen inc mod 4 vmap "
                               "{ 0 : goto rs_netflow_0, 1 : goto rs_netflow_1, 2 : goto rs_netflow_2, 3 : goto rs_netflow_0 }")
    # all up: the same order as the static ruleset (the plan's sequence)
    assert svc["sequence"] == [0, 1, 2, 0]
    # the middle server down: the others keep their chains (indexes)
    down = ha.nft_dispatch("datagram_director", svc, [2, 0, 1]).splitlines()[1]
    assert "vmap { 0 : goto rs_netflow_0, 1 : goto rs_netflow_2, 2 : goto rs_netflow_0 }" in down
    assert "mod 3" in down and "rs_netflow_1" not in down


def test_nft_dispatch_all_down_drops():
    svc = config([ECHO])["services"][0]
    lines = ha.nft_dispatch("t", svc, [0, 0, 0]).splitlines()
    assert lines == ["flush chain netdev t svc_echo",
                     'add rule netdev t svc_echo drop comment "%s"' % ha.nft_comment(svc, [0, 0, 0])]


def test_nft_stale_detects_a_reloaded_ruleset():
    svc = config([ECHO])["services"][0]
    want = [1, 0, 1]
    applied = "chain svc_echo {\n numgen inc mod 2 vmap { 0 : goto rs_echo_0, 1 : goto rs_echo_2 } comment \"%s\"\n}" % (
        ha.nft_comment(svc, want))
    assert ha.nft_stale(applied, [(svc, want)]) == []
    static = "chain svc_echo {\n numgen inc mod 3 vmap { 0 : goto rs_echo_0, 1 : goto rs_echo_1, 2 : goto rs_echo_2 }\n}"
    assert ha.nft_stale(static, [(svc, want)]) == ["echo"]
    assert ha.nft_stale(applied, [(svc, [1, 1, 1])]) == ["echo"]


def test_effective_weights_from_states():
    svc = config([NETFLOW])["services"][0]
    states = {"netflow_0": FakeState(True, 2), "netflow_1": FakeState(False, 1), "netflow_2": FakeState(True, 1, drain=True)}
    assert ha.effective_weights(svc, states) == [2, 0, 0]
    assert ha.effective_weights(svc, {}) == [2, 1, 1]  # unchecked: configured weights


# --- healthy panic threshold -------------------------------------------------------

def _netflow(threshold):
    return config([dict(NETFLOW, panic_threshold=threshold)])["services"][0]


@pytest.mark.parametrize("ups, threshold, weights, panic", [
    ((True, True, True), 50, [2, 1, 1], False),
    ((False, True, True), 50, [0, 1, 1], False),   # 2 of 4 pass: 50 %, not below
    ((False, True, False), 50, [2, 1, 1], True),   # 1 of 4: 25 % < 50 %: all of them
    ((False, True, False), 1, [0, 1, 0], False),   # the default only acts when none passes
    ((False, False, False), 1, [2, 1, 1], True),
    ((False, False, False), 100, [2, 1, 1], True),
    ((True, True, False), 100, [2, 1, 1], True),   # 75 % < 100 %
    ((False, False, False), 0, [0, 0, 0], False),  # off: nothing passes -> drop
    ((False, True, False), 0, [0, 1, 0], False),
])
def test_panic_weights(ups, threshold, weights, panic):
    svc = _netflow(threshold)
    states = dict(("netflow_%d" % i, FakeState(up, w)) for i, (up, w) in enumerate(zip(ups, (2, 1, 1))))
    got = ha.panic_weights(svc, states)
    assert (got.weights, got.panic, got.threshold) == (weights, panic, threshold)
    assert got.total == 4 and got.healthy == sum(w for up, w in zip(ups, (2, 1, 1)) if up)


def test_panic_leaves_drained_real_servers_out():
    """Drained: out of the share (neither healthy nor total) and out of the spread."""
    svc = _netflow(50)
    states = {"netflow_0": FakeState(False, 2, drain=True), "netflow_1": FakeState(True, 1),
              "netflow_2": FakeState(False, 1)}
    got = ha.panic_weights(svc, states)   # 1 of 2 undrained: 50 %, no panic
    assert (got.weights, got.panic, got.healthy, got.total) == ([0, 1, 0], False, 1, 2)
    states["netflow_1"] = FakeState(False, 1)
    got = ha.panic_weights(svc, states)
    assert (got.weights, got.panic, got.healthy, got.total) == ([0, 1, 1], True, 0, 2)
    for state in states.values():
        state.drain = True                # every one drained: the operator's drop
    got = ha.panic_weights(svc, states)
    assert (got.weights, got.panic, got.total) == ([0, 0, 0], False, 0)


def test_panic_data_plane_commands():
    """In panic the nft dispatch and the IPVS weights are every real server's;
    with the policy off the dispatch drops (the negative control)."""
    svc = _netflow(1)
    down = dict(("netflow_%d" % i, FakeState(False, w)) for i, w in enumerate((2, 1, 1)))
    weights = ha.panic_weights(svc, down).weights
    assert ha.nft_dispatch("t", svc, weights) == ha.nft_dispatch("t", svc, [2, 1, 1])
    assert "numgen inc mod 4 vmap" in ha.nft_dispatch("t", svc, weights)
    save = "-A -u 198.51.100.10:2055 -s wrr -o\n" + "".join("-a -u 198.51.100.10:2055 -r 203.0.113.%d:2055 -m -w 0\n" % n for n in (21, 22, 23))
    cmds = ha.ipvs_corrections(ha.parse_ipvsadm_save(save), [(svc, weights)])
    assert [argv[-1] for argv in cmds] == ["2", "1", "1"]
    off = _netflow(0)
    weights = ha.panic_weights(off, down).weights
    assert " drop comment " in ha.nft_dispatch("t", off, weights)
    assert ha.ipvs_corrections(ha.parse_ipvsadm_save(save), [(off, weights)]) == []


def test_panic_messages_on_start_and_end_only():
    svc = _netflow(50)
    ok = ha.Panic([2, 1, 1], False, 4, 4, 50)
    bad = ha.Panic([2, 1, 1], True, 1, 4, 50)
    assert ha.panic_message(svc, None, ok) is None
    assert ha.panic_message(svc, ok, ok) is None and ha.panic_message(svc, bad, bad) is None
    assert ha.panic_message(svc, None, bad) == (
        "netflow PANIC: real servers passing their check carry weight 1 of 4 (25.0 %, threshold 50 %): "
        "spreading over every configured real server [2, 1, 1]")
    assert ha.panic_message(svc, bad, ok).startswith("netflow panic over: passing weight 4 of 4 (100.0 %")


# --- ipvs ------------------------------------------------------------------------

SAVE = """-A -u 198.51.100.10:7000 -s rr -o
-a -u 198.51.100.10:7000 -r 203.0.113.21:7000 -m -w 1
-a -u 198.51.100.10:7000 -r 203.0.113.22:7000 -m -w 1
-a -u 198.51.100.10:7000 -r 203.0.113.23:7000 -m -w 0
-A -u [2001:db8:51::10]:7000 -s rr -o
-a -u [2001:db8:51::10]:7000 -r [2001:db8:113::21]:7000 -m -w 1
-a -t 198.51.100.10:80 -r 203.0.113.21:80 -m -w 1
"""


def test_parse_ipvsadm_save():
    cur = ha.parse_ipvsadm_save(SAVE)
    assert cur[("198.51.100.10:7000", "203.0.113.23:7000")] == 0
    assert cur[("[2001:db8:51::10]:7000", "[2001:db8:113::21]:7000")] == 1
    assert len(cur) == 4  # TCP ignored


def test_ipvs_corrections_after_a_keepalived_reload():
    svc = config([ECHO], "ipvs")["services"][0]
    cmds = ha.ipvs_corrections(ha.parse_ipvsadm_save(SAVE), [(svc, [1, 0, 1])])
    assert cmds == [["ipvsadm", "-e", "-u", "198.51.100.10:7000", "-r", "203.0.113.22:7000", "-m", "-w", "0"],
                    ["ipvsadm", "-e", "-u", "198.51.100.10:7000", "-r", "203.0.113.23:7000", "-m", "-w", "1"]]


def test_ipvs_missing_names_what_keepalived_has_not_added():
    svc = config([ECHO], "ipvs")["services"][0]
    current = ha.parse_ipvsadm_save(SAVE)
    assert ha.ipvs_missing(current, [(svc, [1, 1, 1])]) == []
    del current[("198.51.100.10:7000", "203.0.113.22:7000")]
    assert ha.ipvs_missing(current, [(svc, [1, 1, 1])]) == ["echo 203.0.113.22:7000"]
    assert len(ha.ipvs_missing({}, [(svc, [1, 1, 1])])) == 3


def test_ipvs_edit_ipv6():
    svc = {"vip": "2001:db8:51::10", "port": 7000}
    assert ha.ipvs_edit_argv(svc, {"address": "2001:db8:113::21", "port": 7000}, 3)[3:] == [
        "[2001:db8:51::10]:7000", "-r", "[2001:db8:113::21]:7000", "-m", "-w", "3"]


def test_parse_ipvsadm_save_skips_garbage():
    assert ha.parse_ipvsadm_save(SAVE + "-a -u 198.51.100.10:7000 -r 203.0.113.24:7000 -m\nnot ipvsadm\n") == \
        ha.parse_ipvsadm_save(SAVE)


# --- the files the health role installs, imported flat as on a director -------------

def installed_files():
    role = os.path.join(REPO, "roles", "health")
    with open(os.path.join(role, "tasks", "main.yml")) as f:
        tasks = yaml.safe_load(f)
    (task,) = [t for t in tasks if t["name"] == "Install the health engine, the model and the program"]
    return [item.replace("{{ role_path }}", role) if "{{" in item else os.path.join(role, "files", item)
            for item in task["loop"]]


def test_installed_files_run_flat(tmp_path):
    """The program and its module_utils, copied as the role copies them, work
    with no collection on the path (the director's python3)."""
    for path in installed_files():
        shutil.copy(path, tmp_path)
    (tmp_path / "health.json").write_text(json.dumps(config([ECHO], "ipvs")))
    python = shutil.which("python3", path="/usr/bin") or sys.executable
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    res = subprocess.run([python, "-s", str(tmp_path / "datagram_director_health.py"), "--check-config", "--config",
                          str(tmp_path / "health.json")], capture_output=True, text=True, env=env, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "configuration OK: 3 real servers to check"
    code = ("import sys; sys.path.insert(0, %r); import health_apply as ha; "
            "assert ha.ipvsadm.__name__ == 'ipvsadm'; print(sorted(ha.parse_ipvsadm_save(sys.stdin.read()).items()))"
            % str(tmp_path))
    res = subprocess.run([python, "-s", "-c", code], input=SAVE, capture_output=True, text=True, env=env, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(sorted(ha.parse_ipvsadm_save(SAVE).items()))


# --- outputs -----------------------------------------------------------------------

def test_prometheus_and_status_never_hold_a_secret():
    radius = dict(ECHO, name="radius", port=1812, health_check={"type": "radius", "secret": "TOPSECRET"},
                  real_servers=[{"address": "203.0.113.21", "port": 1812}])
    cfg = config([radius])
    states = {"radius_0": FakeState(False, 1)}
    text = ha.prometheus_text(cfg, states, {"radius_0": 1700000000.5})
    assert 'datagram_director_real_server_up{service="radius",address="203.0.113.21",port="1812"} 0' in text
    assert 'datagram_director_real_server_last_change_seconds{service="radius",address="203.0.113.21",port="1812"} 1700000000.500' in text
    doc = ha.status_document(cfg, states, {}, {"radius": [0]})
    assert "TOPSECRET" not in json.dumps(doc) + text + ha.format_status(doc)
    # Its only real server fails: panic (the default threshold), weight 1.
    assert doc["services"][0]["real_servers"][0]["weight"] == 1 and doc["services"][0]["panic"] is True
    assert 'datagram_director_service_panic{service="radius"} 1' in text


# --- the program, against a fake nft ----------------------------------------------

@pytest.fixture
def program(monkeypatch):
    files = os.path.join(REPO, "roles", "health", "files")
    utils = os.path.join(REPO, "plugins", "module_utils")
    monkeypatch.setitem(sys.modules, "health", health)
    monkeypatch.setitem(sys.modules, "health_apply", ha)
    monkeypatch.syspath_prepend(utils)
    spec = importlib.util.spec_from_file_location("datagram_director_health", os.path.join(files, "datagram_director_health.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def all_up(director):
    """Two good checks (rise 2) for each real server of echo."""
    for name in ("echo_0", "echo_1", "echo_2"):
        for _i in range(2):
            director.engine.entries[name].state.record(True, "ok")


def test_program_applies_transitions_in_one_nft_transaction(program, monkeypatch, tmp_path):
    cfg = config([ECHO])
    cfg.update(state_file=str(tmp_path / "state.json"), textfile=str(tmp_path / "m.prom"),
               drain_file=str(tmp_path / "drain.json"))
    calls = []
    monkeypatch.setattr(program, "run", lambda argv, stdin=None: calls.append((argv, stdin)) or (0, "", ""))
    monkeypatch.setattr(program, "log", lambda level, msg: None)
    d = program.Director(cfg)
    d.holding = False
    all_up(d)
    d.engine.entries["echo_1"].state.record(False, "refused")
    t = d.engine.entries["echo_1"].state.record(False, "refused")
    d.on_change(t)
    assert d.apply(d.dirty)
    (argv, script), = calls
    assert argv == ["nft", "-f", "-"]
    assert script == ha.nft_dispatch("datagram_director", cfg["services"][0], [1, 0, 1])
    assert d.apply({"echo"}) and len(calls) == 1   # unchanged: nothing to do
    (tmp_path / "drain.json").write_text('{"echo": ["203.0.113.21"]}')
    d.apply_drains()
    assert d.apply(d.dirty)
    assert "vmap { 0 : goto rs_echo_2 }" in calls[-1][1]
    d.write_outputs()
    state = json.loads((tmp_path / "state.json").read_text())
    assert [rs["weight"] for rs in state["services"][0]["real_servers"]] == [0, 0, 1]
    assert state["services"][0]["real_servers"][0]["drained"] is True


def test_drain_command_writes_waits_and_reports(program, monkeypatch, tmp_path, capsys):
    """--drain/--enable against the program's own state file: check mode
    changes nothing, a change waits for the program, a repeat changes nothing,
    a bad request is refused before the file is touched."""
    cfg = config([ECHO])
    drain = tmp_path / "lib" / "drain.json"
    cfg.update(state_file=str(tmp_path / "state.json"), textfile=str(tmp_path / "m.prom"), drain_file=str(drain))
    monkeypatch.setattr(program, "run", lambda argv, stdin=None: (0, "", ""))
    monkeypatch.setattr(program, "log", lambda level, msg: None)
    d = program.Director(cfg)
    d.holding = False
    all_up(d)
    assert d.apply({"echo"}, force=True)
    d.write_outputs()

    def cli(*argv):
        rc = program.drain_command(cfg, argv[1:3], argv[0] == "--drain", "--check" in argv, 0)
        return rc, json.loads(capsys.readouterr().out)

    rc, out = cli("--drain", "echo", "203.0.113.23", "--check")
    assert (rc, out["changed"], out["after"], out.get("applied")) == (0, True, ["203.0.113.23"], None)
    assert not drain.exists()
    rc, out = cli("--drain", "echo", "203.0.113.23")
    assert (rc, out["changed"], out["applied"]) == (1, True, False)
    assert "is datagram-director-health running?" in out["error"]
    assert json.loads(drain.read_text()) == {"echo": ["203.0.113.23"]}
    d.apply_drains()             # what the running program does within a second
    assert d.apply(d.dirty)
    d.write_outputs()
    rc, out = cli("--drain", "echo", "203.0.113.23:7000")
    assert (rc, out["changed"], out["applied"]) == (0, False, True)
    assert [rs["weight"] for rs in out["status"]["real_servers"]] == [1, 1, 0]
    rc, out = cli("--enable", "echo", "203.0.113.24")
    assert rc == 2 and "is not a real server of echo" in out["error"]
    assert json.loads(drain.read_text()) == {"echo": ["203.0.113.23"]}
    rc, out = cli("--enable", "echo", "203.0.113.23")
    assert (rc, out["changed"], out["before"], out["after"]) == (1, True, ["203.0.113.23"], [])
    assert json.loads(drain.read_text()) == {}


def test_program_ipvs_edits_what_differs_and_waits_for_keepalived(program, monkeypatch, tmp_path):
    """ipvs plane: one ipvsadm -S, then -e only where the weight differs; a
    service keepalived has not created yet is retried, logged once."""
    cfg = config([ECHO], "ipvs")
    cfg.update(state_file=str(tmp_path / "state.json"), textfile=str(tmp_path / "m.prom"))
    table = {"save": ""}
    calls, logs = [], []

    def run(argv, stdin=None):
        calls.append(argv)
        return (0, table["save"], "") if argv[:2] == ["ipvsadm", "-S"] else (0, "", "")
    monkeypatch.setattr(program, "run", run)
    monkeypatch.setattr(program, "log", lambda level, msg: logs.append((level, msg)))
    d = program.Director(cfg)
    all_up(d)
    assert not d.apply({"echo"}, force=True)
    assert not d.apply({"echo"}, force=True)
    assert calls == [["ipvsadm", "-S", "-n"]] * 2
    assert [m for _l, m in logs if "not in IPVS yet" in m] == [
        "not in IPVS yet (keepalived adds them), weights applied when they are: "
        "echo 203.0.113.21:7000, echo 203.0.113.22:7000, echo 203.0.113.23:7000"]
    table["save"] = SAVE            # keepalived is up: 203.0.113.23 has weight 0 there
    del calls[:]
    assert d.apply({"echo"}, force=True)
    assert calls == [["ipvsadm", "-S", "-n"],
                     ["ipvsadm", "-e", "-u", "198.51.100.10:7000", "-r", "203.0.113.23:7000", "-m", "-w", "1"]]
    assert d.applied["echo"] == [1, 1, 1]


@pytest.mark.parametrize("threshold", [1, 0])
def test_program_panics_when_every_check_fails(program, monkeypatch, tmp_path, threshold):
    """Every real server of echo fails: with the policy on, the dispatch keeps
    every server, the log and the state say panic, and it ends when one passes
    again; with the policy off (panic_threshold 0) the service drops."""
    cfg = config([dict(ECHO, panic_threshold=threshold)])
    cfg.update(state_file=str(tmp_path / "state.json"), textfile=str(tmp_path / "m.prom"))
    calls, logs = [], []
    monkeypatch.setattr(program, "run", lambda argv, stdin=None: calls.append(stdin) or (0, "", ""))
    monkeypatch.setattr(program, "log", lambda level, msg: logs.append((level, msg)))
    d = program.Director(cfg)
    d.holding = False
    all_up(d)
    assert d.apply({"echo"}, force=True)
    for name in ("echo_0", "echo_1", "echo_2"):
        for _i in range(2):
            t = d.engine.entries[name].state.record(False, "timed out")
            if t:
                d.on_change(t)
    assert d.apply(d.dirty)
    d.write_outputs()
    state = json.loads((tmp_path / "state.json").read_text())["services"][0]
    prom = (tmp_path / "m.prom").read_text()
    panics = [(level, m) for level, m in logs if "PANIC" in m]
    if threshold:
        assert calls[-1] == ha.nft_dispatch("datagram_director", cfg["services"][0], [1, 1, 1])
        assert (state["panic"], state["healthy_weight"], state["total_weight"]) == (True, 0, 3)
        assert [rs["weight"] for rs in state["real_servers"]] == [1, 1, 1]
        assert [rs["up"] for rs in state["real_servers"]] == [False] * 3
        assert panics == [(4, "echo PANIC: real servers passing their check carry weight 0 of 3 (0.0 %, threshold 1 %): "
                              "spreading over every configured real server [1, 1, 1]")]
        assert 'datagram_director_service_panic{service="echo"} 1' in prom
        for _i in range(2):
            t = d.engine.entries["echo_2"].state.record(True, "ok")
        d.on_change(t)
        assert d.apply(d.dirty)
        assert calls[-1] == ha.nft_dispatch("datagram_director", cfg["services"][0], [0, 0, 1])
        assert [m for _l, m in logs if "panic over" in m] == [
            "echo panic over: passing weight 1 of 3 (33.3 %, threshold 1 %), weights [0, 0, 1]"]
    else:
        assert calls[-1] == ha.nft_dispatch("datagram_director", cfg["services"][0], [0, 0, 0])
        assert " drop comment " in calls[-1]
        assert state["panic"] is False and panics == []
        assert 'datagram_director_service_panic{service="echo"} 0' in prom


@pytest.mark.parametrize("threshold, weight", [(1, "1"), (0, "0")])
def test_program_ipvs_panic_keeps_every_weight(program, monkeypatch, tmp_path, threshold, weight):
    """ipvs plane: every check failing leaves each real server its weight in
    panic (no ipvsadm -e needed, IPVS holds weight 1), and sets 0 with the
    policy off."""
    cfg = config([dict(ECHO, panic_threshold=threshold)], "ipvs")
    cfg.update(state_file=str(tmp_path / "state.json"), textfile=str(tmp_path / "m.prom"))
    calls = []
    save = "-A -u 198.51.100.10:7000 -s rr -o\n" + "".join(
        "-a -u 198.51.100.10:7000 -r 203.0.113.%d:7000 -m -w 1\n" % n for n in (21, 22, 23))

    def run(argv, stdin=None):
        calls.append(argv)
        return (0, save, "") if argv[:2] == ["ipvsadm", "-S"] else (0, "", "")
    monkeypatch.setattr(program, "run", run)
    monkeypatch.setattr(program, "log", lambda level, msg: None)
    d = program.Director(cfg)
    d.holding = False
    for name in ("echo_0", "echo_1", "echo_2"):
        d.engine.entries[name].state.record(False, "timed out")   # never up: every check failed
    assert d.apply({"echo"}, force=True)
    edits = [argv for argv in calls if argv[:2] == ["ipvsadm", "-e"]]
    assert [argv[-1] for argv in edits] == ([] if threshold else ["0", "0", "0"])
    assert d.applied["echo"] == [int(weight)] * 3
