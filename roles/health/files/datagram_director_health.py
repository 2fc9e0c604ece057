# -*- coding: utf-8 -*-
# Copyright (c) datagram.director contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""datagram.director health program: checks the real servers and applies
their weights to the data plane.

Run by systemd as an unprivileged user with CAP_NET_ADMIN (nft, ipvsadm) and
CAP_NET_RAW; next to it in the same directory: health.py (the engine),
health_apply.py (plan -> engine, states -> nft/ipvsadm), ipvsadm.py (the
ipvsadm save format and argv) and model.py.

  python3 datagram_director_health.py [--config FILE]     run
  python3 datagram_director_health.py --status [--json]   print the state file
  python3 datagram_director_health.py --check-config      validate and exit
  python3 datagram_director_health.py --drain|--enable SERVICE REAL_SERVER [--check]
                                   change the drain file, wait until applied

On every change of a real server's state or weight it applies the service's
weights (in panic, while the passing real servers carry less than the
service's ``panic_threshold`` percent of its weight, every undrained real
server's: logged when it starts and ends, ``"panic": true`` in the state):
nftables -> the dispatch chain svc_<service> is flushed and refilled in one
``nft -f -`` transaction; ipvs -> ``ipvsadm -e ... -w W``.  Every
``reconcile_interval`` seconds it repairs what others reset (a reload of the
static ruleset, a keepalived reload).  SIGHUP re-reads the drain file (also
re-read when it changes) and re-applies everything.  Transitions go to stdout
(the journal); probe options (a RADIUS secret) are never printed.
"""

from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import health  # pylint: disable=import-error
import health_apply as ha  # pylint: disable=import-error

__metaclass__ = type

DEFAULT_CONFIG = "/etc/datagram-director/health.json"


def log(level, msg):
    """sd-daemon priority prefix: 3 err, 4 warning, 5 notice, 6 info."""
    sys.stdout.write("<%d>%s\n" % (level, msg))
    sys.stdout.flush()


def write_atomic(path, text):
    if not path:
        return
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)


def run(argv, stdin=None):
    try:
        proc = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, "", str(exc)
    return proc.returncode, proc.stdout, proc.stderr


class Director:
    def __init__(self, config):
        self.config = config
        self.services = ha.checked_services(config)
        self.data_plane = config.get("data_plane", "nftables")
        self.table = config.get("nftables_table", "datagram_director")
        self.reconcile_interval = float(config.get("reconcile_interval", 5))
        self.drain_file = config.get("drain_file")
        self.drain_stat = None
        self.drains = self.read_drains()
        self.changed_at = {}
        self.applied = {}        # service -> weights last applied
        self.panic = {}          # service -> ha.Panic last computed (logs its changes)
        self.ipvs_waiting = []   # real servers keepalived has not added yet
        self.dirty = set()
        self.hup = False
        self.stop = False
        self.engine = health.HealthEngine(ha.engine_config(config, self.drains), self.on_change)
        self.by_name = {}
        for svc in self.services:
            for index, rs in enumerate(svc["real_servers"]):
                self.by_name[ha.server_name(svc, index)] = (svc, rs)
        # Hold the data plane as it is until every server has had `rise`
        # checks (servers start DOWN), so a restart does not drop traffic.
        hold = max([s.rise * e.interval + e.probe.timeout for s, e in
                    ((e.state, e) for e in self.engine.entries.values())] or [0])
        self.hold_until = time.monotonic() + hold
        self.holding = True

    # -- inputs --------------------------------------------------------------

    def read_drains(self):
        if not self.drain_file:
            return {}
        try:
            st = os.stat(self.drain_file)
            self.drain_stat = (st.st_mtime_ns, st.st_size, st.st_ino)
            with open(self.drain_file) as f:
                return ha.parse_drains(f.read())
        except FileNotFoundError:
            self.drain_stat = None
            return {}
        except (OSError, ValueError) as exc:
            log(3, "drain file %s unreadable, drains unchanged: %s" % (self.drain_file, exc))
            return getattr(self, "drains", {})

    def drain_file_changed(self):
        try:
            st = os.stat(self.drain_file)
            now = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            now = None
        return now != self.drain_stat

    def apply_drains(self):
        self.drains = self.read_drains()
        for name, (svc, rs) in self.by_name.items():
            want = ha.drained(self.drains, svc, rs)
            state = self.engine.entries[name].state
            if state.drain != want:
                log(5, "%s %s:%d %s by operator" % (name, rs["address"], rs["port"], "drained" if want else "enabled"))
                self.changed_at[name] = time.time()
                self.engine.set_drain(name, want)
                self.dirty.add(svc["name"])

    # -- engine callback -----------------------------------------------------

    def on_change(self, t):
        svc, rs = self.by_name[t.name]
        self.changed_at[t.name] = time.time()
        self.dirty.add(svc["name"])
        what = "UP" if t.up else "DOWN"
        level = 5 if t.up else 4
        if t.up == t.previous_up:
            what = "weight"
        log(level, "%s %s:%d %s (weight %s -> %s%s): %s" % (
            t.name, rs["address"], rs["port"], what, t.previous_weight, t.weight,
            ", drained" if t.drain else "", t.reason))

    # -- outputs -------------------------------------------------------------

    def weights(self, svc):
        """The data plane's weights: the passing real servers', or in panic
        (below the service's panic_threshold) every undrained one's."""
        now = ha.panic_weights(svc, self.engine.states)
        msg = ha.panic_message(svc, self.panic.get(svc["name"]), now)
        if msg:
            log(4 if now.panic else 5, msg)
        self.panic[svc["name"]] = now
        return now.weights

    def apply(self, names, force=False):
        """Apply the weights of the services ``names``; True when done."""
        todo = []
        for svc in self.services:
            if svc["name"] in names:
                w = self.weights(svc)
                if force or self.applied.get(svc["name"]) != w:
                    todo.append((svc, w))
        if not todo:
            return True
        ok = self.apply_nft(todo) if self.data_plane == "nftables" else self.apply_ipvs(todo)
        if ok:
            for svc, w in todo:
                self.applied[svc["name"]] = w
                log(6, "applied %s weights %s" % (svc["name"], w))
        return ok

    def apply_nft(self, todo):
        script = "".join(ha.nft_dispatch(self.table, svc, w) for svc, w in todo)
        rc, _out, err = run(["nft", "-f", "-"], script)
        if rc != 0:
            log(3, "nft failed (rc %d), will retry: %s" % (rc, err.strip()))
        return rc == 0

    def apply_ipvs(self, todo, repair=False):
        """Edit the weights that differ; a real server keepalived has not
        added yet is not an error (retried each second, logged once).
        ``repair``: the reconcile's call, which says why a weight differs."""
        rc, out, err = run(["ipvsadm", "-S", "-n"])
        if rc != 0:
            log(3, "ipvsadm -S -n failed: %s" % err.strip())
            return False
        current = ha.parse_ipvsadm_save(out)
        ok = True
        for argv in ha.ipvs_corrections(current, todo):
            if repair:
                log(5, "weight reset by someone else (keepalived reload?), repairing: %s" % " ".join(argv[1:]))
            rc, _out, err = run(argv)
            if rc != 0:
                ok = False
                log(3, "ipvsadm failed (rc %d): %s: %s" % (rc, " ".join(argv[1:]), err.strip()))
        missing = ha.ipvs_missing(current, todo)
        if missing and missing != self.ipvs_waiting:
            log(4, "not in IPVS yet (keepalived adds them), weights applied when they are: %s" % ", ".join(missing))
        self.ipvs_waiting = missing
        return ok and not missing

    def reconcile(self):
        wanted = [(svc, self.weights(svc)) for svc in self.services]
        if not wanted:
            return
        if self.data_plane == "nftables":
            rc, out, err = run(["nft", "list", "table", "netdev", self.table])
            if rc != 0:
                log(3, "nft list table netdev %s failed: %s" % (self.table, err.strip()))
                return
            stale = ha.nft_stale(out, wanted)
            if stale:
                log(5, "dispatch chains reset by someone else, re-applying: %s" % ", ".join(stale))
                self.apply(set(stale), force=True)
        else:
            self.apply_ipvs(wanted, repair=True)

    def write_outputs(self):
        states = self.engine.states
        doc = ha.status_document(self.config, states, self.changed_at, self.applied)
        doc["holding"] = self.holding
        doc["written"] = time.time()
        try:
            write_atomic(self.config.get("state_file"), json.dumps(doc, indent=1, sort_keys=True) + "\n")
            write_atomic(self.config.get("textfile"), ha.prometheus_text(self.config, states, self.changed_at))
        except OSError as exc:
            log(3, "cannot write state: %s" % exc)

    # -- loop ----------------------------------------------------------------

    def run(self):
        signal.signal(signal.SIGHUP, lambda *_a: setattr(self, "hup", True))
        signal.signal(signal.SIGTERM, lambda *_a: setattr(self, "stop", True))
        signal.signal(signal.SIGINT, lambda *_a: setattr(self, "stop", True))
        log(6, "checking %d real servers of %s; data plane %s" % (
            len(self.engine.entries), ", ".join(s["name"] for s in self.services) or "no service", self.data_plane))
        next_tick = next_reconcile = time.monotonic()
        failed = False
        try:
            while not self.stop:
                self.engine.step(0.5)
                now = time.monotonic()
                force = False
                if self.hup or (now >= next_tick and self.drain_file_changed()):
                    force = self.hup
                    self.hup = False
                    self.apply_drains()
                    self.write_outputs()
                if self.holding and (now >= self.hold_until or all(
                        s.up or s.checks >= s.rise for s in self.engine.states.values())):
                    self.holding = False
                    force = True
                    log(6, "first checks done, applying the weights")
                if not self.holding and (self.dirty or force or failed):
                    names = set(s["name"] for s in self.services) if (force or failed) else set(self.dirty)
                    if not failed or now >= next_tick:
                        failed = not self.apply(names, force=force)
                        self.dirty.clear()
                        self.write_outputs()
                if now >= next_tick:
                    next_tick = now + 1.0
                if not self.holding and now >= next_reconcile:
                    next_reconcile = now + self.reconcile_interval
                    self.reconcile()
                    self.write_outputs()
        finally:
            self.engine.close()
        log(6, "stopped")


def load_config(path):
    with open(path) as f:
        config = json.load(f)
    ha.engine_config(config)  # structure check
    health.HealthEngine(ha.engine_config(config)).close()  # probe options check
    return config


def read_drain_file(path):
    """The drain document; {} when the file does not exist yet."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return ha.parse_drains(f.read())


def drain_command(config, target, drain, check, wait):
    """--drain/--enable: change the drain file (atomically, only when it
    changes), then wait until the running program has applied it. Prints one
    JSON document; exit 0 done, 1 not applied in time, 2 bad request."""
    service, real_server = target
    path = config.get("drain_file")
    result = {"service": service, "real_server": real_server, "state": "drained" if drain else "enabled",
              "check": check, "drain_file": path}
    try:
        if not path:
            raise ValueError("the configuration has no drain_file")
        before = read_drain_file(path)
        after, indexes = ha.drain_change(config, before, service, real_server, drain)
    except (OSError, ValueError) as exc:
        result["error"] = str(exc)
        print(json.dumps(result, sort_keys=True))
        return 2
    result.update(changed=after != before, before=before.get(service, []), after=after.get(service, []))
    if result["changed"] and not check:
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path), 0o755)
        write_atomic(path, json.dumps(after, indent=2, sort_keys=True) + "\n")
    rc, doc = 0, None
    if not check:
        # The program re-reads the drain file within a second of a change.
        deadline = time.monotonic() + wait
        while True:
            try:
                with open(config["state_file"]) as f:
                    doc = json.load(f)
            except (OSError, ValueError, KeyError):
                doc = None
            result["applied"] = ha.drain_applied(doc, service, indexes, drain)
            if result["applied"] or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if not result["applied"]:
            result["error"] = "not applied within %g s: is datagram-director-health running?" % wait
            rc = 1
    if doc:
        result["status"] = next((s for s in doc.get("services", []) if s.get("name") == service), None)
    print(json.dumps(result, sort_keys=True))
    return rc


def main(argv=None):
    parser = argparse.ArgumentParser(prog="datagram-director-health", description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--status", action="store_true", help="print the state of the running program")
    parser.add_argument("--json", action="store_true", help="with --status: the state JSON")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--drain", nargs=2, metavar=("SERVICE", "REAL_SERVER"),
                      help="weight 0 for a real server (kept in place and checked), persisted in the drain file")
    what.add_argument("--enable", nargs=2, metavar=("SERVICE", "REAL_SERVER"), help="undo --drain")
    parser.add_argument("--check", action="store_true", help="with --drain/--enable: say what would change, change nothing")
    parser.add_argument("--wait", type=float, default=20,
                        help="with --drain/--enable: seconds to wait for the running program to apply it (default 20)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # The exception text names the problem, never a probe option's value.
        log(3, "bad configuration %s: %s" % (args.config, type(exc).__name__ if "secret" in str(exc) else exc))
        return 2
    if args.check_config:
        print("configuration OK: %d real servers to check" % len(ha.engine_config(config)["servers"]))
        return 0
    if args.drain or args.enable:
        return drain_command(config, args.drain or args.enable, bool(args.drain), args.check, args.wait)
    if args.status:
        try:
            with open(config["state_file"]) as f:
                doc = json.load(f)
        except (OSError, ValueError, KeyError) as exc:
            print("no state (is datagram-director-health running?): %s" % exc, file=sys.stderr)
            return 1
        print(json.dumps(doc, indent=1, sort_keys=True) if args.json else ha.format_status(doc))
        return 0
    Director(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
