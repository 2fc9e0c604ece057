# -*- coding: utf-8 -*-
# Copyright (c) datagram.director contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""From the plan to the health engine, and from health states to the data plane.

Pure functions (no I/O) used by the director's health program
(``roles/health/files/datagram_director_health.py``) and by the unit tests.
Installed flat next to ``health.py``, ``model.py`` and ``ipvsadm.py`` on a
director, so it imports ``model`` and ``ipvsadm`` either as collection
module_utils or as plain modules.

The program's configuration is the plan's services (rendered to JSON by the
health role): every real server of a service whose ``health_check.type`` is a
probe type of the engine gets one engine entry named ``<service>_<index>``,
the same index as its nftables chain ``rs_<service>_<index>``.
"""

from __future__ import absolute_import, division, print_function

import collections
import hashlib
import json
import re

try:
    from ansible_collections.datagram.director.plugins.module_utils import ipvsadm
    from ansible_collections.datagram.director.plugins.module_utils.model import smooth_wrr
except ImportError:  # installed flat on a director
    import ipvsadm  # pylint: disable=import-error
    from model import smooth_wrr  # pylint: disable=import-error

__metaclass__ = type

ENGINE_TYPES = ("udp", "dns", "radius", "ntp", "sip", "tcp", "http")
# health_check keys that are not probe options of the engine.
_NOT_PROBE = ("type", "interval", "timeout", "fall", "rise", "port", "script")
TAG = "datagram-director-health"


def checked_services(config):
    """The services whose real servers the program checks."""
    return [s for s in config.get("services") or []
            if (s.get("health_check") or {}).get("type") in ENGINE_TYPES]


def server_name(service, index):
    return "%s_%d" % (service["name"], index)


def scheduling_weight(service, real_server):
    """The weight the data plane uses when the server is up: rr gives every
    server with weight > 0 one slot, as the plan's sequence does."""
    weight = int(real_server.get("weight", 1))
    if service.get("scheduler", "rr") == "wrr":
        return weight
    return 1 if weight > 0 else 0


def _host_port(text):
    """"a.b.c.d", "a.b.c.d:port", "[v6]:port" or "v6" -> (address, port or None)."""
    text = str(text).strip()
    m = re.match(r"^\[([0-9A-Fa-f:.]+)\](?::([0-9]+))?$", text)
    if m:
        return m.group(1).lower(), int(m.group(2)) if m.group(2) else None
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text.lower(), None


def drained(drains, service, real_server):
    """Is this real server in the drain document ``{"service": ["addr[:port]", ...]}``?"""
    for item in (drains or {}).get(service["name"]) or []:
        try:
            addr, port = _host_port(item)
        except ValueError:
            continue
        if addr == real_server["address"].lower() and port in (None, real_server["port"]):
            return True
    return False


def parse_drains(text):
    """The drain file's JSON; an empty file means no drains. Raises ValueError."""
    if not text.strip():
        return {}
    doc = json.loads(text)
    if not isinstance(doc, dict) or not all(isinstance(v, list) for v in doc.values()):
        raise ValueError("the drain file must map service names to lists of real servers")
    return doc


def drain_change(config, drains, service_name, real_server, drain):
    """Drain (``drain`` True) or enable one real server in the drain document.

    ``real_server`` is "address", "address:port" or "[v6]:port" as an operator
    types it. Returns ``(new_drains, indexes)``: a new document (lists sorted)
    and the indexes of the real servers it names. Enabling removes every entry
    that names one of them. Raises ValueError with what would be accepted."""
    svc = next((s for s in checked_services(config) if s["name"] == service_name), None)
    if svc is None:
        raise ValueError("service %r is not checked by the health program (checked: %s)" % (
            service_name, ", ".join(s["name"] for s in checked_services(config)) or "none"))
    try:
        addr, port = _host_port(real_server)
    except ValueError:
        addr, port = None, None
    indexes = [i for i, rs in enumerate(svc["real_servers"])
               if rs["address"].lower() == addr and port in (None, rs["port"])]
    if not indexes:
        raise ValueError("%r is not a real server of %s (real servers: %s)" % (
            real_server, service_name, ", ".join(
                ("[%s]:%d" if ":" in rs["address"] else "%s:%d") % (rs["address"], rs["port"])
                for rs in svc["real_servers"])))
    current = list((drains or {}).get(service_name) or [])
    servers = [svc["real_servers"][i] for i in indexes]
    if drain:
        if all(drained(drains, svc, rs) for rs in servers):
            items = current
        else:
            items = current + [str(real_server).strip().lower()]
    else:
        items = [item for item in current if not any(drained({service_name: [item]}, svc, rs) for rs in servers)]
    new = dict(drains or {})
    new[service_name] = sorted(set(items))
    if not new[service_name]:
        del new[service_name]
    return new, indexes


def engine_config(config, drains=None):
    """The HealthEngine configuration for ``config`` (see the module doc)."""
    servers = []
    for svc in checked_services(config):
        hc = svc["health_check"]
        for index, rs in enumerate(svc["real_servers"]):
            probe = dict((k, v) for k, v in hc.items() if k not in _NOT_PROBE and v is not None)
            probe["type"] = hc["type"]
            probe["port"] = hc.get("port") or rs["port"]
            servers.append({
                "name": server_name(svc, index),
                "host": rs["address"],
                "interval": hc.get("interval", 1),
                "timeout": hc.get("timeout", 1),
                "rise": hc.get("rise", 2),
                "fall": hc.get("fall", 2),
                "weight": scheduling_weight(svc, rs),
                "drain": drained(drains, svc, rs),
                "probe": probe,
            })
    return {"servers": servers}


def effective_weights(service, states):
    """Weights per real server index from engine states (``name -> ServerState``);
    a server without a state (not checked) keeps its scheduling weight."""
    out = []
    for index, rs in enumerate(service["real_servers"]):
        state = states.get(server_name(service, index))
        out.append(scheduling_weight(service, rs) if state is None else state.effective_weight)
    return out


def available_weights(service, states):
    """The weights with every real server up: the scheduling weight of each
    one an operator has not drained (drained ones stay out, even in panic)."""
    out = []
    for index, rs in enumerate(service["real_servers"]):
        state = states.get(server_name(service, index))
        out.append(0 if state is not None and state.drain else scheduling_weight(service, rs))
    return out


Panic = collections.namedtuple("Panic", ["weights", "panic", "healthy", "total", "threshold"])


def panic_weights(service, states):
    """The weights the data plane uses, with the healthy panic threshold applied.

    While the real servers that pass their check carry less than
    ``panic_threshold`` percent of the service's weight (drained servers left
    out of both), the service spreads over all of its undrained real servers
    instead, as Envoy does: a check that fails everywhere is more likely wrong
    than every real server dead, and a drop would lose every datagram anyway.
    ``panic_threshold`` 0 never panics (no server passing -> drop)."""
    healthy = effective_weights(service, states)
    available = available_weights(service, states)
    threshold = int(service.get("panic_threshold") or 0)
    h, total = sum(healthy), sum(available)
    panic = bool(threshold and total and h * 100 < threshold * total)
    return Panic(available if panic else healthy, panic, h, total, threshold)


def panic_message(service, before, now):
    """The log line for a change of panic state, or None."""
    if before is not None and before.panic == now.panic:
        return None
    if now.panic:
        return ("%s PANIC: real servers passing their check carry weight %d of %d (%s %%, threshold %d %%): "
                "spreading over every configured real server %s" % (
                    service["name"], now.healthy, now.total, _percent(now), now.threshold, now.weights))
    if before is None:
        return None
    return "%s panic over: passing weight %d of %d (%s %%, threshold %d %%), weights %s" % (
        service["name"], now.healthy, now.total, _percent(now), now.threshold, now.weights)


def _percent(p):
    return "%.1f" % (100.0 * p.healthy / p.total) if p.total else "-"


def digest(weights):
    return hashlib.sha256(json.dumps(list(weights)).encode()).hexdigest()[:12]


def nft_comment(service, weights):
    return "%s %s %s" % (TAG, service["name"], digest(weights))


def nft_dispatch(table, service, weights):
    """One nft transaction replacing the service's dispatch chain: the smooth
    weighted order over ``weights`` (0 = no slot, the chain keeps its place),
    or a drop when no real server has weight."""
    chain = "netdev %s svc_%s" % (table, service["name"])
    comment = nft_comment(service, weights)
    order = smooth_wrr(list(weights))
    lines = ["flush chain %s" % chain] + ["add rule %s %s" % (chain, rule) for rule in nft_service_head(service)]
    lines += nft_templates(table, service, weights)
    if order:
        slots = ", ".join("%d : goto rs_%s_%d" % (slot, service["name"], index) for slot, index in enumerate(order))
        lines.append('add rule %s numgen inc mod %d vmap { %s } comment "%s"' % (chain, len(order), slots, comment))
    else:
        lines.append('add rule %s drop comment "%s"' % (chain, comment))
    return "\n".join(lines) + "\n"


def nft_service_head(service):
    """The rules of the dispatch chain before the round robin, as the data
    plane template renders them: the mirrors' copies, the template match."""
    rules = []
    if service.get("mirrors"):
        rules.append("jump mirror_%s" % service["name"])
    if service.get("template_match"):
        rules.append("%s goto tmpl_%s" % (service["template_match"], service["name"]))
    return rules


def nft_templates(table, service, weights):
    """Refill the template chain of a flow export service: a copy to every
    real server with weight (healthy, undrained; all of them in panic)."""
    if not service.get("template_match"):
        return []
    chain = "netdev %s tmpl_%s" % (table, service["name"])
    family = "ip6" if service.get("family") == 6 else "ip"
    lines = ["flush chain %s" % chain, 'add rule %s counter name "templates_%s"' % (chain, service["name"])]
    for rs, weight in zip(service["real_servers"], weights):
        if weight > 0:
            lines.append('add rule %s %s daddr set %s udp dport set %d dup to "lo"' % (
                chain, family, rs["address"], rs["port"]))
    lines.append("add rule %s drop" % chain)
    return lines


def nft_stale(listing, services_weights):
    """Names of services whose dispatch chain in ``listing`` (``nft list table
    netdev TABLE``) lacks the comment of the wanted weights, e.g. after the data
    plane unit reloaded the static ruleset."""
    return [svc["name"] for svc, weights in services_weights
            if ('comment "%s"' % nft_comment(svc, weights)) not in listing]


def ipvs_edit_argv(service, real_server, weight):
    """Set one real server's weight; weight 0 quiesces (no new datagrams)."""
    return ipvsadm.edit_argv("udp", ipvsadm.endpoint(service["vip"], service["port"]),
                             ipvsadm.endpoint(real_server["address"], real_server["port"]), "masq", weight)


def parse_ipvsadm_save(text):
    """``ipvsadm -S -n`` -> {(vip endpoint, real server endpoint): weight} for UDP;
    lines it cannot parse are skipped."""
    out = {}
    for (protocol, vip), service in ipvsadm.parse_save(text, errors=[]).items():
        if protocol == "udp":
            for rs, real_server in service["real_servers"].items():
                out[(vip, rs)] = real_server["weight"]
    return out


def ipvs_corrections(current, services_weights):
    """argv lists that make IPVS (``current`` from parse_ipvsadm_save) hold the
    wanted weights; real servers keepalived has not added are left alone."""
    cmds = []
    for svc, weights in services_weights:
        vip = ipvsadm.endpoint(svc["vip"], svc["port"])
        for rs, weight in zip(svc["real_servers"], weights):
            key = (vip, ipvsadm.endpoint(rs["address"], rs["port"]))
            if key in current and current[key] != weight:
                cmds.append(ipvs_edit_argv(svc, rs, weight))
    return cmds


def ipvs_missing(current, services_weights):
    """The real servers (``service address:port``) not in IPVS (``current``)."""
    out = []
    for svc, _weights in services_weights:
        vip = ipvsadm.endpoint(svc["vip"], svc["port"])
        for rs in svc["real_servers"]:
            rs_ep = ipvsadm.endpoint(rs["address"], rs["port"])
            if (vip, rs_ep) not in current:
                out.append("%s %s" % (svc["name"], rs_ep))
    return out


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(config, states, changed_at):
    """Node exporter textfile: per real server up, weight, drain, last change;
    per service whether it is in panic."""
    metrics = (
        ("real_server_up", "gauge", "1 when the real server passes its health check (rise/fall applied)"),
        ("real_server_weight", "gauge",
         "Weight the data plane uses now (0: down or drained; in panic every undrained real server has its weight)"),
        ("real_server_drained", "gauge", "1 when the real server is drained by an operator"),
        ("real_server_last_change_seconds", "gauge", "Unix time of the last change of state or weight"),
        ("service_panic", "gauge",
         "1 while the service spreads over all its real servers: the passing ones carry less than panic_threshold"),
    )
    rows = dict((m[0], []) for m in metrics)
    for svc in checked_services(config):
        weights = panic_weights(svc, states)
        rows["service_panic"].append(('service="%s"' % _label(svc["name"]), 1 if weights.panic else 0))
        for index, rs in enumerate(svc["real_servers"]):
            name = server_name(svc, index)
            state = states.get(name)
            if state is None:
                continue
            labels = 'service="%s",address="%s",port="%d"' % (_label(svc["name"]), _label(rs["address"]), rs["port"])
            rows["real_server_up"].append((labels, 1 if state.up else 0))
            rows["real_server_weight"].append((labels, weights.weights[index]))
            rows["real_server_drained"].append((labels, 1 if state.drain else 0))
            rows["real_server_last_change_seconds"].append((labels, "%.3f" % changed_at.get(name, 0)))
    lines = []
    for metric, kind, text in metrics:
        full = "datagram_director_" + metric
        lines.append("# HELP %s %s" % (full, text))
        lines.append("# TYPE %s %s" % (full, kind))
        lines.extend("%s{%s} %s" % (full, labels, value) for labels, value in rows[metric])
    return "\n".join(lines) + "\n"


def status_document(config, states, changed_at, applied):
    """The state JSON: what ``--status`` prints and realserver.yml reads.
    Never holds probe options (a RADIUS secret stays in the config file)."""
    services = []
    for svc in checked_services(config):
        servers = []
        weights = panic_weights(svc, states)
        for index, rs in enumerate(svc["real_servers"]):
            state = states.get(server_name(svc, index))
            if state is None:
                continue
            servers.append({
                "index": index, "address": rs["address"], "port": rs["port"], "up": state.up,
                "drained": state.drain, "weight": weights.weights[index],
                "configured_weight": scheduling_weight(svc, rs), "reason": state.reason,
                "rtt": state.rtt, "checks": state.checks, "last_change": changed_at.get(server_name(svc, index)),
            })
        services.append({"name": svc["name"], "vip": svc["vip"], "port": svc["port"],
                         "check": svc["health_check"]["type"], "applied": applied.get(svc["name"]),
                         "panic": weights.panic, "panic_threshold": weights.threshold,
                         "healthy_weight": weights.healthy, "total_weight": weights.total,
                         "real_servers": servers})
    return {"data_plane": config.get("data_plane"), "services": services}


def drain_applied(doc, service_name, indexes, drain):
    """Has the running program (its state document ``doc``) taken a drain or
    enable of the real servers ``indexes`` into the data plane? Their drain
    flag matches and the weights last applied are the service's weights."""
    svc = next((s for s in (doc or {}).get("services") or [] if s.get("name") == service_name), None)
    if svc is None:
        return False
    servers = dict((rs["index"], rs) for rs in svc.get("real_servers") or [])
    if any(i not in servers or servers[i]["drained"] != drain for i in indexes):
        return False
    weights = [servers[i]["weight"] for i in sorted(servers)]
    return svc.get("applied") == weights


def format_status(doc):
    """Human-readable status table."""
    lines = ["data plane: %s" % doc.get("data_plane")]
    for svc in doc.get("services") or []:
        lines.append("%s %s:%s (%s check), applied weights %s%s" % (
            svc["name"], svc["vip"], svc["port"], svc["check"], svc.get("applied"),
            ", PANIC (passing weight %s of %s below %s %%): spread over all" % (
                svc.get("healthy_weight"), svc.get("total_weight"), svc.get("panic_threshold"))
            if svc.get("panic") else ""))
        for rs in svc["real_servers"]:
            lines.append("  %-40s %-5s %-8s weight %-3s %s" % (
                ipvsadm.endpoint(rs["address"], rs["port"]), "up" if rs["up"] else "DOWN",
                "drained" if rs["drained"] else "", rs["weight"], rs["reason"]))
    return "\n".join(lines)
