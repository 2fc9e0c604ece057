# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health engine against real servers from Debian packages.

Topology, made per test session (root needed):

    netns CLI  dgd-c0 198.51.100.1/24 2001:db8:1::1/64
        |  veth
    netns SRV  dgd-s0 198.51.100.10-.15/24 2001:db8:1::10/64
               .10 python3 UDP echo and misbehaving servers, TCP listener
               .11 dnsmasq   .12 freeradius (Status-Server)   .13 chronyd
               .14 sipp (OPTIONS UAS)   .15 python3 http.server

The test process moves its own main thread into CLI (setns), so every probe
socket lives there and no traffic leaves the two namespaces.  Servers run with
``ip netns exec SRV`` and are stopped by their PID.

Packages: iproute2 nftables dnsmasq-base freeradius chrony sip-tester python3.
A missing one skips the tests that need it, naming the package.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from ansible_collections.datagram.director.plugins.module_utils import health as h

CLONE_NEWNET = 0x40000000
TAG = "dgd%d" % (os.getpid() % 100000)
CLI, SRV = TAG + "c", TAG + "s"
CLI_IP, ECHO_IP, DNS_IP, RADIUS_IP, NTP_IP, SIP_IP, HTTP_IP = (
    "198.51.100.1", "198.51.100.10", "198.51.100.11", "198.51.100.12",
    "198.51.100.13", "198.51.100.14", "198.51.100.15")
CLI_IP6, SRV_IP6 = "2001:db8:1::1", "2001:db8:1::10"
SECRET = "s3cret-for-tests"
DROP_PORT = 9999      # nft drops it in SRV: no reply, no ICMP
CLOSED_PORT = 9       # nothing listens: ICMP port unreachable / TCP RST
TOGGLE_PORT = 7005    # an echo port a test blocks and unblocks

PACKAGES = {"ip": "iproute2", "nft": "nftables", "dnsmasq": "dnsmasq-base (or dnsmasq)",
            "freeradius": "freeradius", "chronyd": "chrony", "sipp": "sip-tester"}


def need(binary):
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        pytest.skip("needs %s from the Debian package %s" % (binary, PACKAGES.get(binary, binary)))
    return path


def run(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


MISBEHAVE = r'''
import os, selectors, socket, sys, time
ip, ip6 = sys.argv[1], sys.argv[2]
modes = {7777: "echo", 7001: "garbage", 7002: "truncate", 7003: "slow", 7004: "wrong", %(toggle)d: "echo"}
for p in range(7100, 7164):
    modes[p] = "echo"
sel = selectors.DefaultSelector()
for port, mode in modes.items():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, port)); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, mode)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.bind((ip6, 7777)); s6.setblocking(False)
sel.register(s6, selectors.EVENT_READ, "echo")
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lst.bind((ip, 6514)); lst.listen(64); lst.setblocking(False)
sel.register(lst, selectors.EVENT_READ, "accept")
later = []
print("ready", flush=True)
while True:
    now = time.monotonic()
    for item in [x for x in later if x[0] <= now]:
        later.remove(item)
        item[1].sendto(item[2], item[3])
    for key, _ in sel.select(0.05):
        if key.data == "accept":
            c, _a = key.fileobj.accept(); c.close(); continue
        try:
            data, addr = key.fileobj.recvfrom(65535)
        except OSError:
            continue
        mode = key.data
        if mode == "echo":
            key.fileobj.sendto(data, addr)
        elif mode == "garbage":
            key.fileobj.sendto(os.urandom(7) + b"\xff\xc0\xc0" * 30, addr)
        elif mode == "truncate":
            key.fileobj.sendto(data[:5], addr)
        elif mode == "slow":
            later.append((now + 1.5, key.fileobj, data, addr))
        elif mode == "wrong":
            key.fileobj.sendto(b"WRONG", addr)
''' % {"toggle": TOGGLE_PORT}

SIPP_UAS = textwrap.dedent("""\
    <?xml version="1.0" encoding="ISO-8859-1" ?>
    <!DOCTYPE scenario SYSTEM "sipp.dtd">
    <scenario name="OPTIONS UAS">
      <recv request="OPTIONS" crlf="true"></recv>
      <send>
        <![CDATA[

          SIP/2.0 200 OK
          [last_Via:]
          [last_From:]
          [last_To:];tag=[pid]SIPpTag01[call_number]
          [last_Call-ID:]
          [last_CSeq:]
          Contact: <sip:[local_ip]:[local_port];transport=[transport]>
          Content-Length: 0

        ]]>
      </send>
    </scenario>
    """)

RADIUSD_CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
raddbdir = {d}
confdir = {d}
modconfdir = {d}/mods-config
logdir = {d}
run_dir = {d}
db_dir = {d}
libdir = /usr/lib/freeradius
pidfile = {d}/radiusd.pid
name = radiusd
max_request_time = 5
cleanup_delay = 1
max_requests = 1024
hostname_lookups = no
log {{
    destination = stderr
}}
security {{
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 0
    status_server = yes
}}
thread pool {{
    start_servers = 1
    max_servers = 2
    min_spare_servers = 1
    max_spare_servers = 2
    max_requests_per_server = 0
}}
modules {{
    always ok {{
        rcode = ok
    }}
}}
# The "status" virtual server of the Debian package, bound to the lab address.
server status {{
    listen {{
        type = status
        ipaddr = {ip}
        port = 18121
    }}
    client probe {{
        ipaddr = 198.51.100.0/24
        secret = {secret}
    }}
    authorize {{
        ok
        Autz-Type Status-Server {{
            ok
        }}
    }}
}}
"""

CHRONY_CONF = """\
# Serve the local clock at stratum 8 to the lab; -x keeps the host clock alone.
local stratum 8
allow 198.51.100.0/24
bindaddress {ip}
port 123
cmdport 0
pidfile {d}/chronyd.pid
driftfile {d}/chrony.drift
"""


class Lab:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        self.home_fd = None

    def start(self, name, argv, cwd=None):
        log = open(os.path.join(self.tmp, name + ".log"), "wb")
        proc = subprocess.Popen(["ip", "netns", "exec", SRV] + argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd or self.tmp)
        self.procs.append((name, proc, log))
        return proc

    def log(self, name):
        try:
            with open(os.path.join(self.tmp, name + ".log"), "rb") as f:
                return f.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def wait_ok(self, name, spec, limit=15.0):
        end = time.monotonic() + limit
        res = None
        while time.monotonic() < end:
            res = h.probe_once(spec)
            if res.ok:
                return res
            proc = [p for n, p, _l in self.procs if n == name][0]
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail("%s did not come up (%s); log:\n%s" % (name, res, self.log(name)))

    def nft(self, script):
        return subprocess.run(["ip", "netns", "exec", SRV, "nft", "-f", "-"], input=script, text=True,
                              capture_output=True, check=True, timeout=10)

    def stop_all(self):
        for _name, proc, _log in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc, log in reversed(self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            log.close()
        self.procs = []


def _setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    need("ip")
    need("nft")
    lab = Lab(str(tmp_path_factory.mktemp("health-lab")))
    created = []
    try:
        for ns in (CLI, SRV):
            run("ip", "netns", "add", ns)
            created.append(ns)
        run("ip", "link", "add", "dgd-c0", "netns", CLI, "type", "veth", "peer", "name", "dgd-s0", "netns", SRV)
        for ns, dev in ((CLI, "dgd-c0"), (SRV, "dgd-s0")):
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", CLI, "addr", "add", CLI_IP + "/24", "dev", "dgd-c0")
        run("ip", "-n", CLI, "-6", "addr", "add", CLI_IP6 + "/64", "dev", "dgd-c0", "nodad")
        for ip in (ECHO_IP, DNS_IP, RADIUS_IP, NTP_IP, SIP_IP, HTTP_IP):
            run("ip", "-n", SRV, "addr", "add", ip + "/24", "dev", "dgd-s0")
        run("ip", "-n", SRV, "-6", "addr", "add", SRV_IP6 + "/64", "dev", "dgd-s0", "nodad")
        # Port-unreachable tests fire ICMP errors back to back: no rate limit.
        run("ip", "netns", "exec", SRV, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0")
        lab.nft(textwrap.dedent("""\
            table inet dgd_health {
                chain input {
                    type filter hook input priority 0; policy accept;
                    udp dport %d drop
                    tcp dport %d drop
                    jump toggle
                }
                chain toggle {
                }
            }
            """ % (DROP_PORT, DROP_PORT)))
        lab.start("misbehave", ["python3", "-c", MISBEHAVE, ECHO_IP, SRV_IP6])
        lab.home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        ns_fd = os.open("/run/netns/" + CLI, os.O_RDONLY)
        try:
            _setns(ns_fd)
        finally:
            os.close(ns_fd)
        lab.wait_ok("misbehave", {"host": ECHO_IP, "port": 7777, "payload": "hello"})
        yield lab
    finally:
        if lab.home_fd is not None:
            _setns(lab.home_fd)
            os.close(lab.home_fd)
        lab.stop_all()
        for ns in created:
            run("ip", "netns", "del", ns, check=False)


@pytest.fixture(scope="session")
def dns_server(lab):
    binary = need("dnsmasq")
    lab.start("dnsmasq", [binary, "-k", "-C", "/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
                          "--listen-address=" + DNS_IP, "--port=53", "--local=/example.test/",
                          "--host-record=host.example.test,198.51.100.98,2001:db8:1::98",
                          "--pid-file=" + os.path.join(lab.tmp, "dnsmasq.pid"), "--log-facility=-",
                          "--user=root", "--group=root"])
    lab.wait_ok("dnsmasq", {"type": "dns", "host": DNS_IP, "query_name": "host.example.test", "query_type": "A"})
    return DNS_IP


@pytest.fixture(scope="session")
def radius_server(lab):
    binary = need("freeradius")
    d = os.path.join(lab.tmp, "raddb")
    os.makedirs(d)
    with open(os.path.join(d, "radiusd.conf"), "w") as f:
        f.write(RADIUSD_CONF.format(d=d, ip=RADIUS_IP, secret=SECRET))
    lab.start("freeradius", [binary, "-f", "-l", "stdout", "-d", d, "-n", "radiusd"])
    lab.wait_ok("freeradius", {"type": "radius", "host": RADIUS_IP, "port": 18121, "secret": SECRET})
    return RADIUS_IP


@pytest.fixture(scope="session")
def ntp_server(lab):
    binary = need("chronyd")
    conf = os.path.join(lab.tmp, "chrony.conf")
    with open(conf, "w") as f:
        f.write(CHRONY_CONF.format(d=lab.tmp, ip=NTP_IP))
    lab.start("chronyd", [binary, "-d", "-x", "-u", "root", "-f", conf])
    lab.wait_ok("chronyd", {"type": "ntp", "host": NTP_IP})
    return NTP_IP


@pytest.fixture(scope="session")
def sip_server(lab):
    binary = need("sipp")
    scen = os.path.join(lab.tmp, "options-uas.xml")
    with open(scen, "w") as f:
        f.write(SIPP_UAS)
    lab.start("sipp", [binary, "-sf", scen, "-i", SIP_IP, "-p", "5060", "-nostdin"])
    lab.wait_ok("sipp", {"type": "sip", "host": SIP_IP})
    return SIP_IP


@pytest.fixture(scope="session")
def http_server(lab):
    docroot = os.path.join(lab.tmp, "www")
    os.makedirs(docroot)
    with open(os.path.join(docroot, "index.html"), "w") as f:
        f.write("ok\n")
    lab.start("http", ["python3", "-m", "http.server", "--bind", HTTP_IP, "--directory", docroot, "8080"])
    lab.wait_ok("http", {"type": "http", "host": HTTP_IP, "port": 8080})
    return HTTP_IP


def probe(**spec):
    spec.setdefault("timeout", 1.0)
    return h.probe_once(spec)


def assert_fail(res, fragment):
    assert not res.ok, res
    assert fragment in res.reason, res


# --------------------------------------------------------------------------- positive, per protocol

def test_udp_echo_text_and_regex(lab):
    res = probe(host=ECHO_IP, port=7777, payload="PING 42", expect=r"^PING \d+$", min_length=7, max_length=7)
    assert res.ok, res
    assert 0 < res.rtt < 1


def test_udp_echo_hex(lab):
    res = probe(host=ECHO_IP, port=7777, payload_hex="deadbeef00", expect_hex="deadbeef")
    assert res.ok, res


def test_udp_echo_ipv6(lab):
    assert probe(host=SRV_IP6, port=7777, payload="v6").ok


def test_dns(dns_server):
    res = probe(type="dns", host=dns_server, query_name="host.example.test", query_type="A")
    assert res.ok and "1 answer" in res.reason, res
    assert probe(type="dns", host=dns_server, query_name="host.example.test", query_type="AAAA").ok


def test_dns_expected_nxdomain(dns_server):
    assert probe(type="dns", host=dns_server, query_name="nope.example.test",
                 expect_rcode="NXDOMAIN", expect_answer=False).ok
    assert_fail(probe(type="dns", host=dns_server, query_name="nope.example.test"), "NXDOMAIN")


def test_radius_status_server(radius_server):
    res = probe(type="radius", host=radius_server, port=18121, secret=SECRET)
    assert res.ok and "Access-Accept" in res.reason, res


def test_radius_wrong_secret_times_out(radius_server):
    # freeradius silently drops a request whose Message-Authenticator is wrong
    assert_fail(probe(type="radius", host=radius_server, port=18121, secret="wrong", timeout=0.5), "timed out")


def test_ntp(ntp_server):
    res = probe(type="ntp", host=ntp_server)
    assert res.ok and "stratum" in res.reason, res


def test_sip_options(sip_server):
    res = probe(type="sip", host=sip_server)
    assert res.ok and res.reason.startswith("SIP 200"), res


def test_http_and_tcp(http_server, lab):
    assert probe(type="http", host=http_server, port=8080).ok
    assert probe(type="http", host=http_server, port=8080, expect_status=[200]).ok
    assert_fail(probe(type="http", host=http_server, port=8080, http_path="/missing"), "404")
    assert probe(type="tcp", host=http_server, port=8080).ok
    assert probe(type="tcp", host=ECHO_IP, port=6514).ok


# --------------------------------------------------------------------------- negative cases

def test_icmp_port_unreachable_is_immediate(lab):
    res = probe(host=ECHO_IP, port=CLOSED_PORT, payload="x", timeout=2.0)
    assert_fail(res, "ICMP port unreachable")
    assert res.rtt < 0.5


@pytest.mark.parametrize("ptype", ["dns", "radius", "ntp", "sip"])
def test_icmp_port_unreachable_every_udp_type(lab, ptype):
    res = probe(type=ptype, host=ECHO_IP, port=CLOSED_PORT, secret=SECRET if ptype == "radius" else None)
    assert_fail(res, "ICMP port unreachable")


def test_icmp_port_unreachable_ipv6(lab):
    assert_fail(probe(host=SRV_IP6, port=CLOSED_PORT, payload="x"), "ICMP port unreachable")


def test_tcp_refused(lab):
    assert_fail(probe(type="tcp", host=ECHO_IP, port=CLOSED_PORT), "connection refused")


def test_timeout_when_dropped(lab):
    res = probe(host=ECHO_IP, port=DROP_PORT, payload="x", timeout=0.3)
    assert_fail(res, "timed out")
    assert 0.29 <= res.rtt < 0.6
    assert_fail(probe(type="tcp", host=ECHO_IP, port=DROP_PORT, timeout=0.3), "timed out after 0.3s connecting")


@pytest.mark.parametrize("ptype, fragment", [
    ("dns", "QR bit"),                              # the echo sends our query back
    ("ntp", "mode 3"),
    ("radius", "Response Authenticator mismatch"),
    ("sip", "not a SIP response"),
])
def test_wrong_reply_from_echo(lab, ptype, fragment):
    res = probe(type=ptype, host=ECHO_IP, port=7777, secret=SECRET if ptype == "radius" else None)
    assert_fail(res, fragment)


def test_wrong_reply_generic(lab):
    assert_fail(probe(host=ECHO_IP, port=7004, payload="PING", expect="^PING"), "does not match")
    assert_fail(probe(host=ECHO_IP, port=7004, payload="PING", expect_hex="50494e47"), "does not start")


@pytest.mark.parametrize("ptype, fragment", [
    ("dns", "truncated DNS reply"),
    ("ntp", "truncated NTP reply"),
    ("radius", "truncated RADIUS reply"),
    ("udp", "too short"),
])
def test_truncated_reply(lab, ptype, fragment):
    res = probe(type=ptype, host=ECHO_IP, port=7002, payload="0123456789", min_length=10,
                secret=SECRET if ptype == "radius" else None)
    assert_fail(res, fragment)


@pytest.mark.parametrize("ptype", ["dns", "ntp", "radius", "sip"])
def test_garbage_reply(lab, ptype):
    res = probe(type=ptype, host=ECHO_IP, port=7001, secret=SECRET if ptype == "radius" else None)
    assert not res.ok, res
    assert "internal error" not in res.reason


def test_slow_server(lab):
    assert_fail(probe(host=ECHO_IP, port=7003, payload="zzz", timeout=0.5), "timed out")
    res = probe(host=ECHO_IP, port=7003, payload="zzz", timeout=3.0)
    assert res.ok and res.rtt >= 1.4, res


# --------------------------------------------------------------------------- concurrency and engine

def test_run_probes_concurrent_and_ordered(lab):
    specs = [{"host": ECHO_IP, "port": p, "payload": "n%d" % p, "expect": "^n%d$" % p} for p in range(7100, 7164)]
    specs.append({"host": ECHO_IP, "port": DROP_PORT, "payload": "x", "timeout": 0.5})
    specs.append({"host": ECHO_IP, "port": CLOSED_PORT, "payload": "x"})
    t0 = time.monotonic()
    results = h.run_probes(specs)
    elapsed = time.monotonic() - t0
    assert all(r.ok for r in results[:64]), [r for r in results if not r.ok]
    assert "timed out" in results[64].reason
    assert "ICMP" in results[65].reason
    assert elapsed < 1.0            # concurrent: about one timeout, not the sum


def _block_toggle(lab, blocked):
    lab.nft("flush chain inet dgd_health toggle\n"
            + ("add rule inet dgd_health toggle udp dport %d drop\n" % TOGGLE_PORT if blocked else ""))


def test_engine_rise_fall_drain(lab, dns_server):
    events = []
    config = {
        "interval": 0.2, "timeout": 0.15, "rise": 2, "fall": 2,
        "servers": [
            {"name": "toggle", "host": ECHO_IP, "port": TOGGLE_PORT, "weight": 3, "probe": {"payload": "t"}},
            {"name": "dns", "host": dns_server,
             "probe": {"type": "dns", "query_name": "host.example.test", "query_type": "A"}},
            {"name": "dead", "host": ECHO_IP, "port": DROP_PORT},
            {"name": "closed", "host": ECHO_IP, "port": CLOSED_PORT},
        ],
    }
    engine = h.HealthEngine(config, events.append)
    try:
        def until(cond, limit):
            end = time.monotonic() + limit
            while time.monotonic() < end and not cond():
                engine.step(0.05)
            return cond()

        assert until(lambda: engine.states["toggle"].up and engine.states["dns"].up, 2.0)
        up_events = [(e.name, e.up, e.weight) for e in events]
        assert ("toggle", True, 3) in up_events and ("dns", True, 1) in up_events
        # servers that never answer stay DOWN from the start: no event at all
        assert not any(e.name in ("dead", "closed") for e in events)
        assert "ICMP" in engine.states["closed"].reason
        assert "timed out" in engine.states["dead"].reason

        events.clear()
        assert engine.set_drain("toggle", True).weight == 0
        assert engine.states["toggle"].up
        assert engine.set_drain("toggle", False).weight == 3
        assert engine.set_weight("toggle", 5).weight == 5
        assert len(events) == 3

        events.clear()
        _block_toggle(lab, True)
        assert until(lambda: not engine.states["toggle"].up, 2.0)
        assert [(e.name, e.up, e.weight) for e in events] == [("toggle", False, 0)]
        assert "timed out" in events[0].reason
        _block_toggle(lab, False)
        assert until(lambda: engine.states["toggle"].up, 2.0)
        assert events[-1].name == "toggle" and events[-1].up and events[-1].weight == 5
    finally:
        _block_toggle(lab, False)
        engine.close()


def test_run_forever_calls_back_and_stops(lab):
    seen = []
    config = {"interval": 0.1, "rise": 1, "fall": 1,
              "servers": [{"host": ECHO_IP, "port": p} for p in range(7100, 7110)]}
    t0 = time.monotonic()
    states = h.run_forever(config, seen.append, should_stop=lambda: len(seen) >= 10, duration=5)
    assert time.monotonic() - t0 < 2
    assert len(seen) == 10 and all(t.up and t.weight == 1 for t in seen)
    assert all(s.up for s in states.values())


def test_engine_rejects_timeout_longer_than_interval():
    with pytest.raises(ValueError):
        h.HealthEngine({"interval": 0.5, "timeout": 1, "servers": [{"host": ECHO_IP, "port": 1}]})


# --------------------------------------------------------------------------- the Ansible module

def _adhoc(args, tmp_path, check=True):
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    if not os.path.exists(ansible):
        ansible = shutil.which("ansible")
    if not ansible:
        pytest.skip("needs ansible-core (the ansible command)")
    import ansible_collections.datagram.director as coll
    coll_root = os.path.dirname(os.path.dirname(os.path.dirname(list(coll.__path__)[0])))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=coll_root, ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
               ANSIBLE_HOME=str(tmp_path / "home"), ANSIBLE_NOCOLOR="1", ANSIBLE_DEPRECATION_WARNINGS="0",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.oneline")
    # Debian 12's python3 runs the module, as on a director; --check proves it is check-mode safe.
    argv = ["ip", "netns", "exec", CLI, ansible, "localhost", "-i", "localhost,", "-c", "local",
            "-e", "ansible_python_interpreter=/usr/bin/python3", "-m", "datagram.director.udp_probe",
            "-a", json.dumps(args)] + (["--check"] if check else [])
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, check=False)
    line = [x for x in proc.stdout.splitlines() if x.startswith("localhost |")]
    assert line, proc.stdout[-3000:] + proc.stderr[-3000:]
    status, payload = line[0].split("=>", 1)
    out = json.loads(payload)
    out["_status"] = status.split("|", 1)[1].strip()
    return proc, out


def test_module_probes_list(lab, radius_server, tmp_path):
    proc, out = _adhoc({
        "type": "radius", "port": 18121, "secret": SECRET,
        "probes": [
            {"host": radius_server},
            {"host": ECHO_IP, "port": CLOSED_PORT},
            {"type": "udp", "host": ECHO_IP, "port": 7777, "payload": "hello", "expect": "^hello$",
             "name": "echo"},
        ]}, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert SECRET not in proc.stdout
    assert out["changed"] is False and out["ok"] is False
    r = out["results"]
    assert [x["ok"] for x in r] == [True, False, True], r
    assert "Access-Accept" in r[0]["reason"] and "ICMP" in r[1]["reason"]
    assert r[0]["name"] == "radius %s:18121" % radius_server and r[2]["name"] == "echo"
    assert r[2]["type"] == "udp" and r[2]["rtt"] > 0


def test_module_single_probe_and_require_ok(lab, tmp_path):
    proc, out = _adhoc({"host": ECHO_IP, "port": 7777, "payload": "x"}, tmp_path, check=False)
    assert proc.returncode == 0 and out["ok"] and len(out["results"]) == 1
    proc, out = _adhoc({"host": ECHO_IP, "port": CLOSED_PORT, "payload": "x", "require_ok": True}, tmp_path)
    assert proc.returncode != 0 and out["_status"].startswith("FAILED")
    assert "ICMP port unreachable" in out["msg"]


def test_module_rejects_bad_probe(lab, tmp_path):
    proc, out = _adhoc({"type": "radius", "host": ECHO_IP}, tmp_path)
    assert proc.returncode != 0 and "needs a secret" in out["msg"]
