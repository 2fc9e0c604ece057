# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The data model: every invalid inventory is refused with a message that names
the variable, the bad value and what is expected; valid ones give the plan."""

from __future__ import annotations

import copy
import os

import pytest
import yaml

from ansible_collections.datagram.director.plugins.module_utils.model import ModelError, build_plan, smooth_wrr

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def load_model(inventory):
    """The model as the director_plan action builds it from an inventory dir."""
    base = os.path.join(REPO, "inventories", inventory)
    with open(os.path.join(base, "group_vars", "directors.yml")) as f:
        group = yaml.safe_load(f)
    with open(os.path.join(base, "hosts.yml")) as f:
        hosts = yaml.safe_load(f)["all"]["children"]["directors"]["hosts"]
    model = dict((k[len("director_"):], v) for k, v in group.items() if k.startswith("director_"))
    model["directors"] = dict(
        (name, dict((k, hv.get("director_" + k)) for k in ("vrrp_priority", "frontend_address", "backend_address")))
        for name, hv in hosts.items())
    return model


@pytest.fixture
def lab():
    return load_model("lab")


def test_lab_plan(lab):
    plan = build_plan(lab)
    d1 = plan["directors"]["dd-director1"]
    assert d1["peer"] == "dd-director2"
    front = d1["instances"][0]
    assert (front["unicast_src_ip"], front["unicast_peer"]) == ("198.51.100.11", "198.51.100.12")
    assert front["vips"] == ["198.51.100.10/24"] and front["vips_excluded"] == ["2001:db8:51::10/64"]
    assert plan["directors"]["dd-director2"]["instances"][1]["unicast_peer"] == "203.0.113.11"
    echo = plan["services"][0]
    assert echo["sequence"] == [0, 1, 2]
    assert plan["services"][1]["family"] == 6
    assert plan["frontend"]["networks"] == {"ipv4": ["198.51.100.0/24"], "ipv6": ["2001:db8:51::/64"]}
    # one conntrack zone per real-server address, stable across runs
    assert sorted(plan["zones"].values()) == list(range(1000, 1006))
    assert build_plan(copy.deepcopy(lab)) == plan


def test_example_inventory_is_valid():
    plan = build_plan(load_model("example"))
    assert plan["services"]


@pytest.mark.parametrize("weights, order", [
    ([1, 1, 1], [0, 1, 2]),
    ([2, 1, 1, 1], [0, 1, 2, 3, 0]),
    ([4, 2, 2], [0, 1, 2, 0]),          # reduced by the gcd
    ([5, 1, 1], [0, 0, 1, 0, 2, 0, 0]),  # smooth: the heavy server is interleaved
    ([1, 0, 1], [0, 2]),                 # weight 0 is drained
    ([0, 0], []),
])
def test_smooth_wrr(weights, order):
    assert smooth_wrr(weights) == order


def test_wrr_sequence_follows_weights(lab):
    lab["services"][0]["scheduler"] = "wrr"
    lab["services"][0]["real_servers"].append({"address": "203.0.113.24", "port": 7000, "weight": 1})
    lab["services"][0]["real_servers"][0]["weight"] = 2
    seq = build_plan(lab)["services"][0]["sequence"]
    assert [seq.count(i) for i in range(4)] == [2, 1, 1, 1]


def test_rr_ignores_weights_but_drains_zero(lab):
    lab["services"][0]["real_servers"][0]["weight"] = 5
    lab["services"][0]["real_servers"][1]["weight"] = 0
    assert build_plan(lab)["services"][0]["sequence"] == [0, 2]


def _set(path, value):
    def mutate(model):
        target = model
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _add_director(model):
    model["directors"]["dd-director3"] = {"vrrp_priority": 50, "frontend_address": "198.51.100.13",
                                          "backend_address": "203.0.113.13"}


def _dup_rs(model):
    model["services"][0]["real_servers"].append(dict(model["services"][0]["real_servers"][0]))


def _dns(**options):
    return _set(["services", 0, "health_check"], dict(options, type="dns"))


def _http(**options):
    return _set(["services", 0, "health_check"], dict(options, type="http", port=8080))


# (mutation, the variable named, words of what is expected)
INVALID = {
    "vip not an address": (_set(["frontend_vips", 0], "198.51.100.300/24"),
                           "director_frontend_vips[0]: got '198.51.100.300/24'", "prefix length"),
    "vip without prefix": (_set(["frontend_vips", 0], "198.51.100.10"),
                           "director_frontend_vips[0]: got '198.51.100.10'", "prefix length"),
    "service vip not a frontend vip": (_set(["services", 0, "vip"], "198.51.100.99"),
                                       "director_services[0].vip: got '198.51.100.99'", "one of director_frontend_vips"),
    "real server is a vip": (_set(["services", 0, "real_servers", 0, "address"], "203.0.113.10"),
                             "director_services[0].real_servers[0].address: got '203.0.113.10'", "not a VIP"),
    "duplicate vrid on one interface": (lambda m: (m.update(backend_interface="front", backend_vrid=51)),
                                        "director_backend_vrid: got 51", "different from director_frontend_vrid"),
    "three directors": (_add_director, "directors (inventory group)", "exactly two director hosts"),
    "equal priorities with preempt": (_set(["directors", "dd-director2", "vrrp_priority"], 150),
                                      "director_vrrp_priority: got 150", "distinct priorities"),
    "port zero": (_set(["services", 0, "port"], 0), "director_services[0].port: got 0", "from 1 to 65535"),
    "port too high": (_set(["services", 0, "real_servers", 1, "port"], 70000),
                      "director_services[0].real_servers[1].port: got 70000", "from 1 to 65535"),
    "duplicate real server": (_dup_rs, "director_services[0].real_servers[3]: got '203.0.113.21:7000'",
                              "listed once per service"),
    "negative weight": (_set(["services", 0, "real_servers", 2, "weight"], -1),
                        "director_services[0].real_servers[2].weight: got -1", "from 0 to 65535"),
    "unknown scheduler": (_set(["services", 0, "scheduler"], "lc"),
                          "director_services[0].scheduler: got 'lc'", "one of rr, wrr"),
    "ops with persistence": (_set(["services", 0, "persistence_timeout"], 300),
                             "director_services[0].persistence_timeout: got 300", "no persistence"),
    "real server family differs": (_set(["services", 0, "real_servers", 0, "address"], "2001:db8:113::21"),
                                   "director_services[0].real_servers[0].address: got '2001:db8:113::21'", "IPv4"),
    "real server off the backend": (_set(["services", 0, "real_servers", 0, "address"], "198.18.0.5"),
                                    "director_services[0].real_servers[0].address: got '198.18.0.5'",
                                    "backend network"),
    "sub-second adverts with VRRPv2": (lambda m: m.update(vrrp_version=2, vrrp_advert_int=0.1),
                                       "director_vrrp_advert_int: got 0.1", "version 3"),
    "unknown data plane": (_set(["data_plane"], "ebpf"), "director_data_plane: got 'ebpf'", "auto, ipvs, nftables"),
    "no backend gateway vip": (_set(["backend_gateway_vips"], []), "director_backend_gateway_vips: got []",
                               "NAT-mode real servers"),
    "bad director address": (_set(["directors", "dd-director1", "frontend_address"], "dd-director1"),
                             "dd-director1: director_frontend_address: got 'dd-director1'", "IPv4 or IPv6 address"),
    "ops switched off": (_set(["services", 0, "ops"], False), "director_services[0].ops: got False", "per-packet"),
    "bad service name": (_set(["services", 0, "name"], "Echo Service"),
                         "director_services[0].name: got 'Echo Service'", "lower-case"),
    "all weights zero": (lambda m: [rs.update(weight=0) for rs in m["services"][0]["real_servers"]],
                         "director_services[0].real_servers: got [0, 0, 0]", "weight > 0"),
    # options that were read with bool()/float() or not at all
    "advert interval a boolean": (_set(["vrrp_advert_int"], True), "director_vrrp_advert_int: got True", "seconds"),
    "default health check not a mapping": (_set(["health_check"], "none"), "director_health_check: got 'none'",
                                           "a mapping with a type"),
    "health check type a list": (_set(["services", 0, "health_check"], {"type": ["udp"]}),
                                 "director_services[0].health_check.type: got ['udp']", "one of none, udp"),
    "dns type the engine lacks": (_dns(query_type="CAA"), "director_services[0].health_check.query_type: got 'CAA'",
                                  "a DNS type"),
    "dns rcode unknown": (_dns(expect_rcode="BOGUS"), "director_services[0].health_check.expect_rcode: got 'BOGUS'",
                          "a DNS rcode"),
    "dns name with an empty label": (_dns(query_name="a..b"), "director_services[0].health_check.query_name: got 'a..b'",
                                     "a DNS name"),
    "http path without slash": (_http(http_path="health"), "director_services[0].health_check.http_path: got 'health'",
                                "starting with /"),
    "http path with a space": (_http(http_path="/a b"), "director_services[0].health_check.http_path: got '/a b'",
                               "without spaces"),
    "http host a mapping": (_http(http_host={"a": 1}), "director_services[0].health_check.http_host: got {'a': 1}",
                            "a string"),
    "sip uri without scheme": (_set(["services", 0, "health_check"], {"type": "sip", "sip_uri": "example.org"}),
                               "director_services[0].health_check.sip_uri: got 'example.org'", "a SIP URI"),
    "nas identifier too long": (_set(["services", 0, "health_check"], dict(type="radius", secret="s", nas_identifier="n" * 254)),
                                "director_services[0].health_check.nas_identifier", "at most 253 bytes"),
    "udp payload a mapping": (_set(["services", 0, "health_check", "payload"], {"ping": 1}),
                              "director_services[0].health_check.payload: got {'ping': 1}", "a string"),
    "udp min length above max": (lambda m: m["services"][0]["health_check"].update(min_length=10, max_length=4),
                                 "director_services[0].health_check.max_length: got 4", "at least min_length (10)"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_inventory_is_refused(lab, case):
    mutate, where, expected = INVALID[case]
    mutate(lab)
    with pytest.raises(ModelError) as exc:
        build_plan(lab)
    message = str(exc.value)
    assert where in message
    assert expected in message


def test_every_problem_is_listed(lab):
    lab["services"][0]["port"] = 0
    lab["services"][0]["scheduler"] = "lc"
    lab["data_plane"] = "ebpf"
    with pytest.raises(ModelError) as exc:
        build_plan(lab)
    assert len(exc.value.errors) == 3


# --- booleans follow Ansible's rules, not bool() ---------------------------

def _service_option(key):
    return (lambda m, v: m["services"][0].__setitem__(key, v), lambda plan: plan["services"][0][key],
            "director_services[0].%s" % key)


def _expect_answer():
    def mutate(model, value):
        model["services"][0]["health_check"] = {"type": "dns", "expect_answer": value}
    return mutate, lambda plan: plan["services"][0]["health_check"]["expect_answer"], \
        "director_services[0].health_check.expect_answer"


# option: (set it in the model, read it from the plan, the name in errors)
BOOLEANS = {
    "director_vrrp_preempt": (lambda m, v: m.__setitem__("vrrp_preempt", v), lambda plan: plan["vrrp"]["preempt"],
                              "director_vrrp_preempt"),
    "alpha": _service_option("alpha"),
    "inhibit_on_failure": _service_option("inhibit_on_failure"),
    "expect_answer": _expect_answer(),
}


@pytest.mark.parametrize("value, expected", [("false", False), ("no", False), ("0", False), ("off", False),
                                             (" False ", False), (0, False), ("yes", True), ("true", True),
                                             ("on", True), ("1", True), (True, True)])
@pytest.mark.parametrize("option", sorted(BOOLEANS))
def test_boolean_words(lab, option, value, expected):
    mutate, read, _name = BOOLEANS[option]
    mutate(lab, value)
    assert read(build_plan(lab)) is expected


@pytest.mark.parametrize("value", ["maybe", "", 2, [True]])
@pytest.mark.parametrize("option", sorted(BOOLEANS))
def test_boolean_rejects_other_values(lab, option, value):
    mutate, _read, name = BOOLEANS[option]
    mutate(lab, value)
    with pytest.raises(ModelError) as exc:
        build_plan(lab)
    assert "%s: got %r, expected a boolean" % (name, value) in str(exc.value)


def test_boolean_words_are_ansibles():
    """The model keeps a copy (it runs on directors without Ansible): it must not drift."""
    from ansible.module_utils.parsing import convert_bool
    from ansible_collections.datagram.director.plugins.module_utils import model

    assert model.BOOLEANS_TRUE == convert_bool.BOOLEANS_TRUE
    assert model.BOOLEANS_FALSE == convert_bool.BOOLEANS_FALSE


def test_nopreempt_as_a_string_allows_equal_priorities(lab):
    """bool("false") was True: equal priorities were refused and keepalived got no nopreempt."""
    lab["vrrp_preempt"] = "false"
    lab["directors"]["dd-director2"]["vrrp_priority"] = 150
    assert build_plan(lab)["vrrp"]["preempt"] is False


@pytest.mark.parametrize("value", ["yes", "true", 1, None])
def test_ops_true_in_any_form(lab, value):
    lab["services"][0]["ops"] = value
    assert build_plan(lab)["services"]


@pytest.mark.parametrize("value", ["false", "no", "0"])
def test_ops_false_in_any_form_is_refused(lab, value):
    lab["services"][0]["ops"] = value
    with pytest.raises(ModelError) as exc:
        build_plan(lab)
    assert "director_services[0].ops: got %r, expected true: per-packet" % value in str(exc.value)


# --- quorum: 1 up to the total weight of the real servers ---------------------

def _wrr_2_1_1(model):
    svc = model["services"][0]
    svc["scheduler"] = "wrr"
    svc["real_servers"][0]["weight"] = 2


@pytest.mark.parametrize("quorum, expected", [(None, 1), (1, 1), ("3", 3), (4, 4)])
def test_quorum_valid(lab, quorum, expected):
    _wrr_2_1_1(lab)
    lab["services"][0]["quorum"] = quorum
    assert build_plan(lab)["services"][0]["quorum"] == expected


@pytest.mark.parametrize("quorum", [0, -1, 5, "two", True, 1.5])
def test_quorum_invalid(lab, quorum):
    _wrr_2_1_1(lab)  # total weight 4
    lab["services"][0]["quorum"] = quorum
    with pytest.raises(ModelError) as exc:
        build_plan(lab)
    assert "director_services[0].quorum: got %r, expected an integer from 1 to 4 (the total weight" % (quorum,) \
        in str(exc.value)


def test_quorum_counts_configured_weights_under_rr(lab):
    """keepalived sums the weights it is given; rr renders them too (3 servers of weight 1)."""
    lab["services"][0]["quorum"] = 4
    with pytest.raises(ModelError) as exc:
        build_plan(lab)
    assert "director_services[0].quorum: got 4, expected an integer from 1 to 3" in str(exc.value)


def test_quorum_type_checked_when_the_total_is_unknown(lab):
    lab["services"][0]["real_servers"][0]["address"] = "not an address"
    lab["services"][0]["quorum"] = "two"
    with pytest.raises(ModelError) as exc:
        build_plan(lab)
    assert "director_services[0].quorum: got 'two', expected an integer from 1 to 2147483647" in str(exc.value)


@pytest.mark.parametrize("value, expected", [("0.5", 0.5), (2, 2.0)])
def test_advert_int_as_text_or_integer(lab, value, expected):
    lab["vrrp_advert_int"] = value
    assert build_plan(lab)["vrrp"]["advert_int"] == expected


def test_dns_options_the_engine_takes(lab):
    lab["services"][0]["health_check"] = {"type": "dns", "query_name": "example.org", "query_type": "aaaa",
                                          "expect_rcode": 3, "expect_answer": "no"}
    hc = build_plan(lab)["services"][0]["health_check"]
    assert (hc["query_type"], hc["expect_rcode"], hc["expect_answer"]) == ("aaaa", 3, False)


# --- healthy panic threshold: percent 0-100, per service or director_panic_threshold -------

@pytest.mark.parametrize("default, own, expected", [
    (None, None, 1), (None, 0, 0), (None, "50", 50), (None, 100, 100),
    (30, None, 30), (30, 0, 0), (0, None, 0), ("0", 75, 75)])
def test_panic_threshold_valid(lab, default, own, expected):
    lab["panic_threshold"] = default
    lab["services"][0]["panic_threshold"] = own
    assert build_plan(lab)["services"][0]["panic_threshold"] == expected


@pytest.mark.parametrize("value", [-1, 101, "half", True, 1.5, [50]])
def test_panic_threshold_invalid(lab, value):
    lab["services"][0]["panic_threshold"] = value
    with pytest.raises(ModelError) as exc:
        build_plan(lab)
    assert str(exc.value) == ("director_services[0].panic_threshold: got %r, expected an integer from 0 to 100 "
                              "(percent of the service's weight; 0 turns panic off)" % (value,))


@pytest.mark.parametrize("value", [-5, "all", 200])
def test_director_panic_threshold_invalid_once(lab, value):
    """A bad default is reported once, not once per service that takes it."""
    lab["panic_threshold"] = value
    with pytest.raises(ModelError) as exc:
        build_plan(lab)
    assert exc.value.errors == ["director_panic_threshold: got %r, expected an integer from 0 to 100 "
                                "(percent of a service's weight; 0 turns panic off)" % (value,)]


def test_panic_threshold_refused_with_a_misc_check(lab):
    lab["services"][0]["health_check"] = {"type": "misc", "script": "/usr/local/bin/check"}
    lab["services"][0]["panic_threshold"] = 50
    with pytest.raises(ModelError) as exc:
        build_plan(lab)
    assert "director_services[0].panic_threshold: got 50, expected 0 with a misc health check" in str(exc.value)
    lab["services"][0]["panic_threshold"] = 0
    assert build_plan(lab)["services"][0]["panic_threshold"] == 0


@pytest.mark.parametrize("default", [None, 50])
def test_misc_check_does_not_inherit_a_panic_threshold(lab, default):
    """The group default never gives a misc-checked service a panic mode it cannot have."""
    lab["panic_threshold"] = default
    lab["services"][0]["health_check"] = {"type": "misc", "script": "/usr/local/bin/check"}
    assert build_plan(lab)["services"][0]["panic_threshold"] == 0


def test_the_documented_plan_is_the_plan(lab):
    """director_plan's RETURN names every top-level key of the plan, and no other."""
    from ansible_collections.datagram.director.plugins.modules import director_plan

    documented = yaml.safe_load(director_plan.RETURN)["plan"]["contains"]
    assert sorted(documented) == sorted(build_plan(lab))
