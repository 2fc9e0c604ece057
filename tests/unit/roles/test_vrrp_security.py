# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HA through real faults: keepalived's supervision drop-in and the VIP
release helper it runs (roles/vrrp), and VRRP accepted from the peer director
only (check_unicast_src in keepalived.conf, the vrrp_from_peer chain of the
nftables role on both data planes). Rendered from the sample inventories and
checked by the real tools where they are installed (keepalived, nft, ip, sh)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import uuid

import pytest
import yaml

from ansible_collections.datagram.director.plugins.module_utils.model import build_plan

from ..plugins.module_utils.test_model import load_model
from .test_templates import ROLES, add_veths, block, nft_check, nft_table_name, render

INVENTORIES = ["lab", "example"]


def vrrp_defaults():
    with open(os.path.join(ROLES, "vrrp", "defaults", "main.yml")) as f:
        return yaml.safe_load(f)


def hosts(plan):
    return sorted(plan["directors"])


@pytest.fixture
def netns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for a network namespace")
    names = []

    def make():
        name = "ddv-%s" % uuid.uuid4().hex[:8]
        subprocess.run(["ip", "netns", "add", name], check=True)
        names.append(name)
        return name
    yield make
    for name in names:
        subprocess.run(["ip", "netns", "del", name], check=False)


# --- keepalived.conf ---------------------------------------------------------

@pytest.mark.parametrize("inventory", INVENTORIES)
def test_every_instance_checks_the_unicast_source(tmp_path, netns, inventory):
    plan = build_plan(load_model(inventory))
    for host in hosts(plan):
        conf = render("vrrp", "keepalived.conf.j2", plan, "nftables", host)
        for inst in plan["directors"][host]["instances"]:
            lines = [line.strip() for line in block(conf, "vrrp_instance " + inst["name"])]
            assert "check_unicast_src" in lines
            assert "unicast_src_ip " + inst["unicast_src_ip"] in lines and inst["unicast_peer"] in lines
    if shutil.which("keepalived") is None:
        pytest.skip("keepalived is not installed (apt-get install keepalived)")
    ns = netns()
    add_veths(ns, {plan["frontend"]["interface"], plan["backend"]["interface"]})
    (tmp_path / "keepalived.conf").write_text(conf.replace("/etc/keepalived/conf.d", str(tmp_path)))
    res = subprocess.run(["ip", "netns", "exec", ns, "keepalived", "--config-test", "--use-file",
                          str(tmp_path / "keepalived.conf")], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


# --- nftables: VRRP from the peer only ----------------------------------------

def vrrp_chain(ruleset):
    """The rule lines of the vrrp_from_peer chain."""
    lines = [line.strip() for line in block(ruleset, "    chain vrrp_from_peer")]
    return [line for line in lines[1:-1] if line and not line.startswith("#")]


@pytest.mark.parametrize("inventory", INVENTORIES)
@pytest.mark.parametrize("data_plane", ["ipvs", "nftables"])
def test_vrrp_filter_on_both_planes(netns, inventory, data_plane):
    if shutil.which("nft") is None:
        pytest.skip("nft is not installed")
    plan = build_plan(load_model(inventory))
    for host in hosts(plan):
        me = plan["directors"][host]
        peer = plan["directors"][me["peer"]]
        ruleset = render("nftables", "dataplane.nft.j2", plan, data_plane, host)
        assert "meta l4proto 112 jump vrrp_from_peer" in ruleset
        assert "type filter hook input priority filter; policy accept;" in ruleset
        rules = vrrp_chain(ruleset)
        fam = {4: "ip", 6: "ip6"}
        # the peer's address on each VRRP interface is accepted, nothing else
        assert rules[:-1] == ['iifname "%s" %s saddr %s counter name "vrrp_peer" accept'
                              % (inst["interface"], fam[inst["family"]], inst["unicast_peer"])
                              for inst in me["instances"]]
        peers = {peer["frontend_address"], peer["backend_address"]}
        assert {inst["unicast_peer"] for inst in me["instances"]} == peers
        assert rules[-1] == 'counter name "vrrp_foreign" drop'
        assert me["frontend_address"] not in " ".join(rules)
        res = nft_check(netns(), ruleset, {plan["frontend"]["interface"], plan["backend"]["interface"]})
        assert res.returncode == 0, res.stderr + ruleset


def _advert(ns, src, dst):
    """One IP protocol 112 datagram from ``src`` to ``dst`` (a raw socket in ``ns``)."""
    code = ("import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)\n"
            "s.bind((%r, 0))\n"
            "s.sendto(bytes([0x31, 1, 255, 1, 0, 10, 0, 0]) + bytes(4), (%r, 0))\n" % (src, dst))
    subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code], check=True)


def _counters(ns):
    out = subprocess.run(["ip", "netns", "exec", ns, "nft", "--json", "list", "counters", "table", "inet",
                          nft_table_name()], capture_output=True, text=True, check=True).stdout
    import json
    return dict((c["counter"]["name"], c["counter"]["packets"])
                for c in json.loads(out)["nftables"] if "counter" in c)


def test_vrrp_filter_drops_a_third_host(netns):
    """Loaded for real in a namespace: protocol 112 from the peer's address is
    accepted, from a third host on the segment dropped and counted."""
    if shutil.which("nft") is None or shutil.which("python3") is None:
        pytest.skip("nft and python3 needed")
    plan = build_plan(load_model("lab"))
    host = hosts(plan)[0]
    me = plan["directors"][host]
    front = plan["frontend"]["interface"]
    inst = next(i for i in me["instances"] if i["interface"] == front and i["family"] == 4)
    director, other = netns(), netns()
    subprocess.run(["ip", "-n", director, "link", "add", front, "type", "veth", "peer", "name", "x",
                    "netns", other], check=True)
    add_veths(director, {plan["backend"]["interface"]} - {front})
    prefix = plan["frontend"]["vips"][0].split("/")[1]
    rogue = "%s.%d" % (inst["unicast_src_ip"].rsplit(".", 1)[0], 250)
    for ns, dev, addrs in ((director, front, [inst["unicast_src_ip"]]),
                           (other, "x", [inst["unicast_peer"], rogue])):
        for addr in addrs:
            subprocess.run(["ip", "-n", ns, "address", "add", "%s/%s" % (addr, prefix), "dev", dev], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
    ruleset = render("nftables", "dataplane.nft.j2", plan, "nftables", host)
    subprocess.run(["ip", "netns", "exec", director, "nft", "--file", "-"], input=ruleset, text=True, check=True)
    _advert(other, inst["unicast_peer"], inst["unicast_src_ip"])
    assert _counters(director) == {"vrrp_peer": 1, "vrrp_foreign": 0}
    for _attempt in range(3):
        _advert(other, rogue, inst["unicast_src_ip"])
    assert _counters(director) == {"vrrp_peer": 1, "vrrp_foreign": 3}


# --- supervision: the drop-in and the VIP release helper -----------------------

def dropin(plan, host):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(render("vrrp", "keepalived-supervision.conf.j2", plan, "nftables", host))
    return parser


def test_dropin_supervises_keepalived():
    plan = build_plan(load_model("lab"))
    d = vrrp_defaults()
    unit = dropin(plan, hosts(plan)[0])
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert 0 < float(service["RestartSec"]) <= 2
    assert 0 < float(service["TimeoutStopSec"]) <= 10
    # SIGTERM reaches the VRRP child (it releases the VIPs) also without its parent
    assert service["KillMode"] == "control-group"
    assert service["ExecStopPost"] == d["vrrp_release_vips_helper"]
    assert service["ExecStartPre"] == "-" + d["vrrp_release_vips_helper"]
    assert int(unit["Unit"]["StartLimitBurst"]) >= 3


def helper(plan, host):
    return render("vrrp", "release-vips.sh.j2", plan, "nftables", host)


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_helper_releases_every_vip_of_the_plan(inventory):
    plan = build_plan(load_model(inventory))
    for host in hosts(plan):
        text = helper(plan, host)
        calls = [line.split()[1:] for line in text.splitlines() if line.startswith("release ")]
        expected = [[vip, inst["interface"]] for inst in plan["directors"][host]["instances"]
                    for vip in inst["vips"] + inst["vips_excluded"]]
        assert calls == expected
        assert sorted(c[0] for c in calls) == sorted(plan["frontend"]["vips"] + plan["backend"]["gateway_vips"])
        assert all("/" in c[0] for c in calls)
        if shutil.which("sh"):
            res = subprocess.run(["sh", "-n"], input=text, capture_output=True, text=True, check=False)
            assert res.returncode == 0, res.stderr
        if shutil.which("shellcheck"):
            res = subprocess.run(["shellcheck", "-s", "sh", "-"], input=text, capture_output=True, text=True,
                                 check=False)
            assert res.returncode == 0, res.stdout


def test_helper_is_idempotent(tmp_path, netns):
    """Run in a namespace holding every VIP plus an address of its own: the VIPs
    go, the director's own address stays; a second run changes nothing and
    succeeds."""
    plan = build_plan(load_model("lab"))
    host = hosts(plan)[0]
    me = plan["directors"][host]
    ns = netns()
    ifaces = {plan["frontend"]["interface"], plan["backend"]["interface"]}
    add_veths(ns, ifaces)
    for iface in ifaces:
        subprocess.run(["ip", "-n", ns, "link", "set", iface, "up"], check=True)
    own = "%s/%s" % (me["frontend_address"], plan["frontend"]["vips"][0].split("/")[1])
    subprocess.run(["ip", "-n", ns, "address", "add", own, "dev", plan["frontend"]["interface"]], check=True)
    vips = [(vip, inst["interface"]) for inst in me["instances"] for vip in inst["vips"] + inst["vips_excluded"]]
    for vip, iface in vips:
        subprocess.run(["ip", "-n", ns, "address", "add", vip, "dev", iface, "nodad"], check=True)
    script = tmp_path / "release-vips"
    script.write_text(helper(plan, host))

    def run():
        return subprocess.run(["ip", "netns", "exec", ns, "sh", str(script)], capture_output=True, text=True,
                              check=False)

    def present():
        out = subprocess.run(["ip", "-n", ns, "-o", "address", "show"], capture_output=True, text=True,
                             check=True).stdout
        return [a for a in [v.split("/")[0] for v, _iface in vips] + [me["frontend_address"]] if " %s/" % a in out]

    first = run()
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("released ") == len(vips)
    assert present() == [me["frontend_address"]]
    second = run()
    assert second.returncode == 0 and second.stdout == "" and second.stderr == ""
