# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every shipped inventory passes the checks preflight runs, for each director.

Ansible itself merges the variables (InventoryManager and VariableManager:
hosts.yml group vars, group_vars/all.yml, group_vars/directors.yml, then the
host vars of hosts.yml), so nested groups and precedence are Ansible's. The
checks are preflight's, in its order: the role's argument spec, then the
director_plan action plugin, which templates the variables and calls
build_plan on the controller.
"""

from __future__ import annotations

import glob
import os
from unittest import mock

import pytest
import yaml
from ansible.errors import AnsibleActionFail
from ansible.inventory.manager import InventoryManager
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.parsing.dataloader import DataLoader
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task
from ansible.template import Templar
from ansible.vars.manager import VariableManager

from ansible_collections.datagram.director.plugins.action.director_plan import ActionModule

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INVENTORIES = sorted(os.path.relpath(path, REPO).rstrip(os.sep) for path in
                     glob.glob(os.path.join(REPO, "inventories", "*", ""))
                     + glob.glob(os.path.join(REPO, "molecule", "*", "inventory", "")))


def load_inventory(inventory):
    """(loader, groups, {director: its variables as a play would see them})."""
    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[os.path.join(REPO, inventory)])
    variables = VariableManager(loader=loader, inventory=inv)
    groups = inv.get_groups_dict()
    hostvars = dict((name, variables.get_vars(host=inv.get_host(name), include_hostvars=False))
                    for name in groups.get("directors", []))
    return loader, groups, hostvars


def director_plan(loader, groups, hostvars, host):
    """The task of roles/preflight/tasks/main.yml (no arguments), run on ``host``."""
    task_vars = dict(hostvars[host], hostvars=hostvars, groups=groups, inventory_hostname=host)
    task = Task()
    task.args = {}
    action = ActionModule(task, mock.MagicMock(), PlayContext(), loader,
                          Templar(loader=loader, variables=task_vars), None)
    return action.run(task_vars=task_vars)


def test_every_inventory_is_found():
    assert "inventories/example" in INVENTORIES and "molecule/ipvs/inventory" in INVENTORIES


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_inventory_passes_preflight(inventory):
    loader, groups, hostvars = load_inventory(inventory)
    assert len(hostvars) == 2, "%s: directors %s" % (inventory, sorted(hostvars))
    with open(os.path.join(REPO, "roles", "preflight", "meta", "argument_specs.yml")) as f:
        spec = yaml.safe_load(f)["argument_specs"]["main"]["options"]
    for host, hv in sorted(hostvars.items()):
        result = ArgumentSpecValidator(spec).validate(dict((k, hv[k]) for k in spec if k in hv))
        assert not result.error_messages, "%s, %s: %s" % (inventory, host, result.error_messages)
        try:
            plan = director_plan(loader, groups, hostvars, host)["plan"]
        except AnsibleActionFail as exc:
            pytest.fail("%s, %s: %s" % (inventory, host, exc.message))
        assert sorted(plan["directors"]) == sorted(hostvars) and plan["services"]
