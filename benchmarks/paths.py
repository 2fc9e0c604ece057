# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The paths of the data-plane benchmark.

A path is one entry: how its director namespace is set up and where the
client sends.  Another data plane (a BPF program, say) is one more entry
here with its own ``setup``; the harness, the sender and the table stay.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import jinja2

import topology as topo
from stats import lean_ruleset, with_same_port_rewrite, without_counters, without_fragment_rules

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "plugins", "module_utils"))
import model  # noqa: E402  pylint: disable=import-error,wrong-import-position

TABLE = "datagram_director"
SHIPPED_TEMPLATES = os.path.join(TOP, "roles", "nftables", "templates")


class Path:
    """One measured path.

    name      short id (table rows, chart, namespace bookkeeping)
    label     what it is, for the table
    director  False for a no-director baseline
    pattern   the receiver pattern: ``spread`` (every datagram to the next
              real server) or ``flow`` (client port k to real server k mod 3);
              a director path's ratio subtracts the baseline of its pattern
    target    ``vip`` (VIP:port) or ``rs`` (the real servers themselves)
    setup     callable(director namespace, work dir) -> None
    echo_port port of the reply check, when it differs from the service's
    peer      callable() -> pids of a userspace peer whose CPU is added
    """

    def __init__(self, name, label, **kw):
        self.name = name
        self.label = label
        self.director = kw.get("director", True)
        self.pattern = kw.get("pattern", "spread")
        self.target = kw.get("target", "vip")
        self.setup = kw.get("setup")
        self.echo_port = kw.get("echo_port", topo.PORT)
        self.peer = kw.get("peer")
        self.stop = kw.get("stop")


# --- the collection's own ruleset ---------------------------------------------

def plan(services=1):
    """The collection's plan for a director of the benchmark topology: the
    measured service last (port 7000 on the three real servers), others
    before it on their own ports (in their dispatch and reply maps)."""
    svcs = []
    for k in range(services - 1):
        svcs.append({"name": "s%d" % k, "vip": topo.VIP, "port": 8000 + k,
                     "real_servers": [{"address": a, "port": 8000 + k} for a in topo.REAL_SERVERS.values()]})
    svcs.append({"name": "bench", "vip": topo.VIP, "port": topo.PORT,
                 "real_servers": [{"address": a, "port": topo.PORT} for a in topo.REAL_SERVERS.values()]})
    return model.build_plan({
        "data_plane": "nftables", "frontend_interface": "eth0", "backend_interface": "eth1",
        "frontend_vrid": 61, "backend_vrid": 62,
        "frontend_vips": [topo.VIP + "/24"], "backend_gateway_vips": [topo.GATEWAY_VIP + "/24"],
        "directors": {"dd1": {"vrrp_priority": 150, "frontend_address": topo.DIRECTOR_FRONT,
                              "backend_address": topo.DIRECTOR_BACK},
                      "dd2": {"vrrp_priority": 100, "frontend_address": "198.51.100.4",
                              "backend_address": "203.0.113.4"}},
        "services": svcs,
    })


def render(services=1):
    """The shipped data-plane template rendered for director dd1 of the benchmark."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(SHIPPED_TEMPLATES),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True)
    return env.get_template("dataplane.nft.j2").render(
        __director_plan=plan(services), __director_data_plane="nftables",
        nftables_table=TABLE, ansible_managed="rendered by benchmarks/paths.py", inventory_hostname="dd1")


def nft_load(netns, workdir, text, name):
    """Write a ruleset to the work dir (kept for reading) and load it."""
    path = os.path.join(workdir, "%s.nft" % name)
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
    topo.sh("nft", "-f", path, netns=netns)


def shipped(services=1, transform=None):
    """Setup: the rendered template loaded unchanged (or ``transform``ed)."""
    def setup(netns, workdir):
        text = render(services)
        nft_load(netns, workdir, transform(text) if transform else text, "dataplane-%d" % services)
    return setup


def empty_ingress_hook(netns, workdir):
    """An ingress chain without rules on the frontend: what any plane hooked
    there costs traffic that is not for a VIP before its first rule."""
    nft_load(netns, workdir, """table netdev hook_bench {
    chain frontend {
        type filter hook ingress device "eth0" priority filter; policy accept;
    }
}
""", "empty_ingress_hook")


# --- what users run instead ------------------------------------------------------

def _rs_map():
    return ", ".join("%d : %s" % (i, a) for i, a in enumerate(topo.REAL_SERVERS.values()))


def dnat_numgen(netns, workdir):
    """Stateful per-flow DNAT: conntrack picks a real server per flow and
    de-NATs its replies."""
    nft_load(netns, workdir, """table ip dnat_bench {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr %s udp dport %d dnat to numgen inc mod 3 map { %s }
    }
}
""" % (topo.VIP, topo.PORT, _rs_map()), "dnat_numgen")


def seed_method(netns, workdir):
    """The seed's method: notrack and a stateless rewrite in prerouting,
    replies SNATed by iptables (conntrack: clashes per client port)."""
    nft_load(netns, workdir, """table ip seed_bench {
    chain pre {
        type filter hook prerouting priority raw; policy accept;
        ip daddr %s udp dport %d notrack ip daddr set numgen inc mod 3 map { %s }
    }
}
""" % (topo.VIP, topo.PORT, _rs_map()), "seed")
    topo.sh("iptables", "-t", "nat", "-A", "POSTROUTING", "-p", "udp", "-s", topo.GATEWAY_VIP + "/24",
            "--sport", str(topo.PORT), "!", "-d", topo.GATEWAY_VIP + "/24",
            "-j", "SNAT", "--to-source", "%s:%d" % (topo.VIP, topo.PORT), netns=netns)


# --- nginx stream, a userspace peer ---------------------------------------------

NGINX_CONF = """worker_processes 1;
worker_cpu_affinity %(cpu)s;
daemon on;
pid %(dir)s/nginx.pid;
error_log %(dir)s/nginx-error.log warn;
load_module %(module)s;
events { worker_connections 65536; }
worker_rlimit_nofile 140000;
stream {
    upstream rs { %(servers)s }
    # forward only: proxy_requests 1 makes every datagram its own session
    server { listen %(vip)s:%(port)d udp rcvbuf=8m; proxy_pass rs; proxy_requests 1; proxy_responses 0; }
    # the reply check: one reply per datagram, sent back from VIP:port
    server { listen %(vip)s:%(echo)d udp rcvbuf=8m; proxy_pass rs; proxy_requests 1; proxy_responses 1;
             proxy_timeout 2s; }
}
"""
NGINX_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def nginx_available():
    """nginx with the stream module installed (the Debian packages nginx and
    libnginx-mod-stream)."""
    return bool(shutil.which("nginx")) and os.path.exists(NGINX_MODULE)


class Nginx:
    """nginx stream in the director namespace, one worker pinned to CPU ``cpu``."""

    def __init__(self, cpu):
        self.cpu = cpu
        self.workdir = None

    def setup(self, netns, workdir):
        """Start nginx inside the director namespace."""
        self.workdir = os.path.join(workdir, "nginx")
        os.makedirs(self.workdir, exist_ok=True)
        conf = os.path.join(self.workdir, "nginx.conf")
        with open(conf, "w", encoding="utf-8") as out:
            out.write(NGINX_CONF % {
                "cpu": format(1 << self.cpu, "b"), "dir": self.workdir, "module": NGINX_MODULE,
                "servers": " ".join("server %s:%d;" % (a, topo.PORT) for a in topo.REAL_SERVERS.values()),
                "vip": topo.VIP, "port": topo.PORT, "echo": topo.PORT + 1})
        topo.sh("nginx", "-c", conf, "-p", self.workdir, "-e", os.path.join(self.workdir, "nginx-error.log"),
                netns=netns)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.workers():
                return
            time.sleep(0.1)
        raise RuntimeError("nginx started no worker")

    def workers(self):
        """PIDs of nginx's worker processes (its master only forks them)."""
        try:
            with open(os.path.join(self.workdir, "nginx.pid"), encoding="utf-8") as pidf:
                master = pidf.read().strip()
        except OSError:
            return []
        out = subprocess.run(["pgrep", "-P", master], capture_output=True, text=True, check=False).stdout
        return [int(p) for p in out.split()]

    def stop(self):
        """Stop this nginx (by its master's PID)."""
        if not self.workdir:
            return
        try:
            with open(os.path.join(self.workdir, "nginx.pid"), encoding="utf-8") as pidf:
                os.kill(int(pidf.read().strip()), 15)
        except (OSError, ValueError):
            pass


def registry(scale=True, nginx_cpu=1):
    """Every path, baselines first.  ``scale`` adds the configuration-size paths."""
    rs_paths = [
        Path("direct_spread", "no director: client on the real servers' bridge, every datagram to the next",
             director=False, target="rs"),
        Path("direct_flow", "no director: client on the real servers' bridge, port k to real server k mod 3",
             director=False, pattern="flow", target="rs"),
        Path("route", "plain IP routing (the reference, 1.00)", target="rs"),
        Path("route_twin", "plain routing again, in a replica of its own: the harness's own noise (reads 1.00)",
             target="rs"),
        Path("route_nft", "plain routing to the real servers with the shipped ruleset loaded: traffic not for a VIP "
             "(their replies are the service's, so they leave with VIP:port)", target="rs",
             setup=shipped()),
        Path("route_hook", "plain routing with an empty ingress chain on the frontend: the floor of any plane "
             "hooked there, for traffic not for a VIP", target="rs", setup=empty_ingress_hook),
    ]
    vip_paths = [
        Path("nft", "shipped nftables plane (rendered template, loaded unchanged)", setup=shipped()),
        Path("nft_nocount", "shipped plane without named counters", setup=shipped(transform=without_counters)),
        Path("nft_nofrag", "shipped plane without fragment rules", setup=shipped(transform=without_fragment_rules)),
        Path("nft_lean", "same without named counters and fragment rules",
             setup=shipped(transform=lean_ruleset)),
        Path("nft_portset", "shipped plane, but rewriting the port to the same port (as before it was left out)",
             setup=shipped(transform=lambda text: with_same_port_rewrite(text, topo.PORT))),
        Path("dnat", "stateful `dnat to numgen` (per flow)", pattern="flow", setup=dnat_numgen),
        Path("seed", "seed's method: notrack + prerouting rewrite + iptables SNAT", setup=seed_method),
    ]
    if scale:
        vip_paths += [
            Path("nft_16", "shipped plane, 16 services", setup=shipped(16)),
            Path("nft_256", "shipped plane, 256 services", setup=shipped(256)),
            Path("route_nft_256", "plain routing to the real servers, shipped ruleset of 256 services loaded",
                 target="rs", setup=shipped(256)),
        ]
    if nginx_available():
        peer = Nginx(nginx_cpu)
        vip_paths.append(Path("nginx", "nginx stream, `proxy_requests 1` (userspace, one pinned worker)",
                              setup=peer.setup, peer=peer.workers, stop=peer.stop, echo_port=topo.PORT + 1))
    return rs_paths + vip_paths
