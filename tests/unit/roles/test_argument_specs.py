# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One validator: the preflight role's argument_specs.yml declares exactly the
model's inputs (types, choices, defaults, required keys, down to every key of
a service, a real server, a mirror and a health check), the validator uses
those defaults and knows no other key, and ansible-doc shows every one.
Every other role declares its inputs as their one source says: a director_*
variable as the model, any other with the default of its defaults/main.yml."""

from __future__ import annotations

import copy
import json
import os
import subprocess

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.datagram.director.plugins.module_utils import model
from ansible_collections.datagram.director.plugins.module_utils.model import ModelError, build_plan

from ..plugins.module_utils.test_model import REPO, load_model
from ...conftest import ansible_tool

SPECS = os.path.join(REPO, "roles", "preflight", "meta", "argument_specs.yml")
# What an argument spec says about values; descriptions are documentation.
VALUE_KEYS = ("type", "elements", "choices", "default", "required", "no_log", "options")


def canonical(spec):
    """An argument spec without documentation and without Ansible's implicit
    values (type str, required false), choices as lists."""
    out = {}
    for name, opt in spec.items():
        item = dict((k, v) for k, v in opt.items() if k in VALUE_KEYS)
        item.setdefault("type", "str")
        if not item.get("required"):
            item.pop("required", None)
        if "choices" in item:
            item["choices"] = list(item["choices"])
        if "options" in item:
            item["options"] = canonical(item["options"])
        out[name] = item
    return out


def differences(declared, modelled, path=""):
    """Each key where two canonical specs differ, as 'path: declared X, model Y'."""
    out = []
    for name in sorted(set(declared) | set(modelled)):
        here = path + name
        if name not in declared or name not in modelled:
            out.append("%s: only in the %s" % (here, "model" if name in modelled else "argument_specs"))
            continue
        a, b = declared[name], modelled[name]
        for key in VALUE_KEYS:
            if key == "options":
                out += differences(a.get(key, {}), b.get(key, {}), here + ".")
            elif a.get(key) != b.get(key):
                out.append("%s.%s: argument_specs %r, model %r" % (here, key, a.get(key), b.get(key)))
    return out


@pytest.fixture(scope="module")
def declared():
    with open(SPECS) as f:
        return yaml.safe_load(f)["argument_specs"]["main"]["options"]


def test_argument_specs_equal_the_model(declared):
    assert differences(canonical(declared), canonical(model.INPUTS)) == []


def test_a_difference_in_one_place_is_found(declared):
    """The comparison itself can fail: one default, one choice, one key changed on one side."""
    changed = copy.deepcopy(declared)
    svc = changed["director_services"]["options"]
    svc["scheduler"]["default"] = "wrr"
    svc["health_check"]["options"]["type"]["choices"].remove("sip")
    del svc["real_servers"]["options"]["weight"]
    choices = ("type.choices: argument_specs ['none', 'udp', 'dns', 'radius', 'ntp', 'tcp', 'http', 'misc'], "
               "model ['none', 'udp', 'dns', 'radius', 'ntp', 'sip', 'tcp', 'http', 'misc']")
    # The health check's keys are written once (a YAML anchor): both places change.
    assert differences(canonical(changed), canonical(model.INPUTS)) == [
        "director_health_check." + choices,
        "director_services.health_check." + choices,
        "director_services.real_servers.weight: only in the model",
        "director_services.scheduler.default: argument_specs 'wrr', model 'rr'",
    ]


def test_health_check_keys_are_the_probe_options():
    options = set(model.HEALTH_CHECK_COMMON)
    for keys in model.HEALTH_CHECK_OPTIONS.values():
        options.update(keys)
    assert set(model.HEALTH_CHECK_SPEC) == options
    assert model.HEALTH_CHECK_SPEC["type"]["choices"] == list(model.HEALTH_CHECK_TYPES)


def _minimal(lab):
    """The lab with its first service reduced to the required keys."""
    svc = lab["services"][0]
    lab["services"][0] = {"name": svc["name"], "vip": svc["vip"], "port": svc["port"],
                          "health_check": {"type": "udp"},
                          "real_servers": [{"address": rs["address"]} for rs in svc["real_servers"]]}
    for key in [k for k in lab if k != "directors" and "director_" + k not in
                [n for n, s in model.GROUP_SPEC.items() if s.get("required")]]:
        del lab[key]
    return lab


def test_the_validator_takes_the_spec_defaults():
    lab = _minimal(load_model("lab"))
    plan = build_plan(lab)
    svc, spec = plan["services"][0], model.SERVICE_SPEC
    assert (svc["scheduler"], svc["quorum"], svc["alpha"], svc["inhibit_on_failure"]) == tuple(
        spec[k]["default"] for k in ("scheduler", "quorum", "alpha", "inhibit_on_failure"))
    assert svc["flow_templates"] is None and spec["flow_templates"]["default"] == "none"
    assert svc["mirrors"] == spec["mirrors"]["default"] == []
    assert [rs["weight"] for rs in svc["real_servers"]] == [model.REAL_SERVER_SPEC["weight"]["default"]] * 3
    assert [rs["port"] for rs in svc["real_servers"]] == [svc["port"]] * 3
    hc = model.HEALTH_CHECK_SPEC
    assert dict((k, svc["health_check"][k]) for k in ("interval", "timeout", "fall", "rise")) == dict(
        (k, hc[k]["default"]) for k in ("interval", "timeout", "fall", "rise"))
    group = model.GROUP_SPEC
    assert svc["reply_rewrite"] == group["director_reply_rewrite"]["default"]
    assert svc["panic_threshold"] == group["director_panic_threshold"]["default"]
    assert plan["data_plane"] == group["director_data_plane"]["default"]
    assert plan["vrrp"] == {"version": 3, "advert_int": 1, "preempt": True, "preempt_delay": 0,
                            "sync_group": "datagram_director", "notify": {}}
    assert [group["director_vrrp_" + k]["default"] for k in ("version", "advert_int", "preempt", "preempt_delay",
                                                             "sync_group", "notify")] == list(plan["vrrp"].values())
    # A health check without a type gets the spec's type.
    lab["services"][0]["health_check"] = {"interval": 2}
    assert build_plan(lab)["services"][0]["health_check"]["type"] == hc["type"]["default"]


@pytest.mark.parametrize("where, key", [("service", "schedular"), ("real server", "wieght"), ("mirror", "prot")])
def test_an_unknown_key_is_refused_by_both(declared, where, key):
    lab = load_model("lab")
    svc = lab["services"][0]
    target = {"service": svc, "real server": svc["real_servers"][0]}.get(where)
    if where == "mirror":
        svc["mirrors"] = [{"address": "203.0.113.99"}]
        target = svc["mirrors"][0]
    target[key] = 1
    with pytest.raises(ModelError, match=r"\.%s: got 1, expected no such key" % key):
        build_plan(lab)
    services = [dict((k, v) for k, v in s.items() if v is not None) for s in lab["services"]]
    result = ArgumentSpecValidator({"director_services": declared["director_services"]}).validate(
        {"director_services": services})
    assert any(key in msg for msg in result.error_messages), result.error_messages


def _doc_options(options, path=""):
    """Every option path ansible-doc shows, recursively."""
    out = set()
    for name, opt in options.items():
        out.add(path + name)
        out |= _doc_options(opt.get("options") or opt.get("suboptions") or {}, path + name + ".")
    return out


def test_ansible_doc_shows_every_key(collections_path, tmp_path):
    exe = ansible_tool("ansible-doc")
    if not exe:
        pytest.skip("needs ansible-core (tools/bootstrap.sh)")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path, ANSIBLE_HOME=str(tmp_path))
    env.pop("ANSIBLE_CONFIG", None)
    res = subprocess.run([exe, "-t", "role", "--json", "datagram.director.preflight"], capture_output=True,
                         text=True, env=env, cwd=str(tmp_path), check=True, timeout=120)
    shown = _doc_options(json.loads(res.stdout)["datagram.director.preflight"]["entry_points"]["main"]["options"])
    expected = set(model.INPUTS)
    for name in ("director_services.", "director_health_check."):
        spec = model.INPUTS[name[:-1]]["options"]
        expected |= _doc_options(spec, name)
    assert len(expected) > 70
    assert sorted(expected - shown) == []


def _role_specs():
    """(role, entry point, options) of every role's argument_specs.yml."""
    out = []
    for role in sorted(os.listdir(os.path.join(REPO, "roles"))):
        path = os.path.join(REPO, "roles", role, "meta", "argument_specs.yml")
        with open(path) as f:
            for entry, spec in yaml.safe_load(f)["argument_specs"].items():
                out.append((role, entry, spec.get("options") or {}))
    return out


def _role_defaults(role):
    path = os.path.join(REPO, "roles", role, "defaults", "main.yml")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return yaml.safe_load(f) or {}


def role_spec_problems(specs, defaults_of):
    """Where a role's argument spec disagrees with the one source of its inputs:
    the model for director_* variables, the role's defaults/main.yml otherwise."""
    out = []
    for role, entry, options in specs:
        defaults = defaults_of(role)
        for name, opt in sorted(options.items()):
            where = "%s/%s: %s" % (role, entry, name)
            if name.startswith("director_"):
                out += ["%s: %s" % (where, d) for d in differences({name: canonical({name: opt})[name]},
                                                                   {name: canonical(model.INPUTS).get(name, {})})]
            elif opt.get("required") and name in defaults:
                out.append("%s: required, but defaults/main.yml sets it" % where)
            elif "{{" not in str(defaults.get(name, "")) and opt.get("default") != defaults.get(name):
                out.append("%s: default %r, defaults/main.yml %r" % (where, opt.get("default"), defaults.get(name)))
        undeclared = sorted(set(defaults) - set(options)) if entry == "main" else []
        out += ["%s/main: %s in defaults/main.yml, not declared" % (role, name) for name in undeclared]
    return out


def test_every_role_declares_its_inputs_as_their_source_does():
    specs = _role_specs()
    assert len(specs) >= 8
    assert role_spec_problems(specs, _role_defaults) == []


def test_a_role_default_that_differs_is_found():
    specs = copy.deepcopy(_role_specs())
    vrrp_main = [options for role, entry, options in specs if (role, entry) == ("vrrp", "main")][0]
    vrrp_main["vrrp_restart_sec"]["default"] = 99
    master = [options for role, entry, options in specs if (role, entry) == ("vrrp", "master")][0]
    master["director_frontend_vips"]["elements"] = "dict"

    def defaults_of(role):
        defaults = _role_defaults(role)
        if role == "flow_audit":
            defaults["flow_audit_extra"] = 1
        return defaults

    found = role_spec_problems(specs, defaults_of)
    assert [line for line in found if "flow_audit_extra" in line] == [
        "flow_audit/main: flow_audit_extra in defaults/main.yml, not declared"]
    assert any(line.startswith("vrrp/main: vrrp_restart_sec: default 99") for line in found), found
    assert "vrrp/master: director_frontend_vips: director_frontend_vips.elements: argument_specs 'dict', " \
           "model 'str'" in found, found
    assert len(found) == 3, found
