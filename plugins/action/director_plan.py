# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller side of datagram.director.director_plan: validate, then plan.

It runs on the controller only, so a bad inventory fails before any director
is touched. The logic lives in module_utils/model.py.
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.datagram.director.plugins.module_utils.model import ModelError, build_plan

# Variables read from the running host (group vars, role defaults) ...
SHARED = (
    "data_plane", "vrrp_version", "vrrp_advert_int", "vrrp_preempt", "vrrp_preempt_delay",
    "vrrp_sync_group", "vrrp_notify", "frontend_interface", "frontend_vrid", "frontend_vips",
    "frontend_gateways", "backend_interface", "backend_vrid", "backend_gateway_vips",
    "services", "reply_rewrite", "reply_zone_base", "health_check", "panic_threshold",
)
# ... and from each director's own host vars.
PER_HOST = ("vrrp_priority", "frontend_address", "backend_address")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _VALID_ARGS = frozenset(("directors",))

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        task_vars = task_vars or {}
        directors = self._task.args.get("directors")
        if directors is None:
            directors = task_vars.get("groups", {}).get("directors", [])
        if not isinstance(directors, list):
            raise AnsibleActionFail("directors: expected a list of inventory host names, got %r" % (directors,))

        hostvars = task_vars.get("hostvars", {})
        # On a director the task sees its own group vars and role defaults; on
        # any other host (a probe client) the first director's vars are the model.
        source = task_vars
        if task_vars.get("inventory_hostname") not in directors and directors and directors[0] in hostvars:
            source = hostvars[directors[0]]
        model = {}
        for key in SHARED:
            name = "director_" + key
            if name in source:
                model[key] = self._templar.template(source[name])
        model["directors"] = {}
        for host in directors:
            if host not in hostvars:
                raise AnsibleActionFail("directors: %r is not a host in the inventory" % (host,))
            hv = hostvars[host]
            model["directors"][host] = dict(
                (key, self._templar.template(hv.get("director_" + key))) for key in PER_HOST)

        try:
            plan = build_plan(model)
        except ModelError as exc:
            raise AnsibleActionFail(
                "The director inventory is invalid; nothing was changed on any host:\n  - "
                + "\n  - ".join(exc.errors))
        result.update(changed=False, plan=plan)
        # A RADIUS health check carries its shared secret in the plan: keep the
        # result out of -v output and logs (validation errors are raised above,
        # so they stay visible).
        if any("secret" in svc["health_check"] for svc in plan["services"]):
            result["_ansible_no_log"] = True
        return result
