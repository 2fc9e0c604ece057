#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kernel_settings
short_description: Kernel modules and sysctls of a director, live and at boot, with check and diff mode
version_added: 0.2.0
description:
  - Loads the listed kernel modules that are neither loaded nor built in (C(modprobe -a), one command) and lists them
    in a C(modules-load.d) file for the next boot.
  - Sets the listed sysctls that differ from the running kernel (read from and written to C(/proc/sys)) and keeps
    them in a C(sysctl.d) file for the next boot.
  - Live values are compared on every run, not only when a file changes, so drift made by hand is repaired and
    C(--check) reports it.
  - Modules are loaded before the sysctls are read, because modules bring sysctls (C(net.ipv4.vs.*) comes with
    C(ip_vs)). In check mode a module that is not loaded yet is reported, and a sysctl the kernel does not have
    yet is reported as to be set.
author:
  - datagram.director developers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: Reports the modules it would load, the sysctls it would set and the files it would write, changing
      nothing.
  diff_mode:
    support: full
    description: One diff per file written and one for the live sysctls (running value before, wanted value after).
options:
  sysctls:
    description:
      - Sysctl keys (dotted, as C(sysctl) names them) and their values.
      - A value with several fields (C(net.ipv4.ip_local_port_range)) compares field by field, whatever the spacing.
    type: dict
    default: {}
  sysctl_file:
    description:
      - File that keeps O(sysctls) for the next boot, in C(sysctl.d) format. Not written when omitted.
    type: path
  modules:
    description: Kernel modules that must be loaded.
    type: list
    elements: str
    default: []
  modules_file:
    description:
      - File that lists O(modules) for the next boot, in C(modules-load.d) format. Not written when omitted.
    type: path
notes:
  - Needs root. A sysctl the kernel lacks after its modules are loaded fails the run before any sysctl is set.
seealso:
  - name: sysctl.d(5)
    description: Format of O(sysctl_file).
    link: https://man7.org/linux/man-pages/man5/sysctl.d.5.html
  - name: modules-load.d(5)
    description: Format of O(modules_file).
    link: https://man7.org/linux/man-pages/man5/modules-load.d.5.html
"""

EXAMPLES = r"""
- name: IPVS modules and the sysctls for NAT with one-packet scheduling
  datagram.director.kernel_settings:
    modules: [ip_vs, ip_vs_rr, ip_vs_wrr]
    modules_file: /etc/modules-load.d/datagram-director.conf
    sysctls:
      net.ipv4.ip_forward: 1
      net.ipv4.vs.expire_nodest_conn: 1
    sysctl_file: /etc/sysctl.d/60-datagram-director.conf
"""

RETURN = r"""
modules_loaded:
  description: Modules that were loaded by this run (in check mode, that would be).
  returned: always
  type: list
  elements: str
  sample: [ip_vs_wrr]
sysctls_set:
  description: Sysctls set by this run (in check mode, that would be), each with its running value before (null when
    the kernel did not have it yet) and the value set.
  returned: always
  type: dict
  sample: {net.ipv4.vs.expire_nodest_conn: {before: "0", after: "1"}}
files_written:
  description: Files whose content changed (in check mode, would change).
  returned: always
  type: list
  elements: str
  sample: [/etc/sysctl.d/60-datagram-director.conf]
"""

import os

from ansible.module_utils.basic import AnsibleModule

PROC_SYS = "/proc/sys"
SYS_MODULE = "/sys/module"
LIB_MODULES = "/lib/modules"
HEADER = "# Managed by Ansible (datagram.director.kernel_settings)\n"


def sysctl_path(key):
    return os.path.join(PROC_SYS, *key.split("."))


def normalized(value):
    """One form for comparing: fields joined by one space (booleans as 0/1)."""
    if isinstance(value, bool):
        value = int(value)
    return " ".join(str(value).split())


def read_sysctl(key):
    try:
        with open(sysctl_path(key)) as handle:
            return normalized(handle.read())
    except FileNotFoundError:
        return None


def builtin_modules():
    """Names of the modules built into the running kernel (modules.builtin)."""
    try:
        with open(os.path.join(LIB_MODULES, os.uname().release, "modules.builtin")) as handle:
            return set(os.path.basename(line.strip())[:-3].replace("-", "_")
                       for line in handle if line.strip().endswith(".ko"))
    except FileNotFoundError:
        return set()


def module_present(name, builtin=frozenset()):
    # /sys/module/NAME exists for a loaded module, but for a built-in one only
    # when it has parameters; modules.builtin lists every built-in one.
    name = name.replace("-", "_")
    return name in builtin or os.path.isdir(os.path.join(SYS_MODULE, name))


def sysctl_file_text(sysctls):
    return HEADER + "".join("%s = %s\n" % (key, normalized(sysctls[key])) for key in sorted(sysctls))


def modules_file_text(modules):
    return HEADER + "".join("%s\n" % name for name in modules)


def read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


def pending_files(wanted):
    """[(path, before, after)] of the files whose content differs."""
    out = []
    for path, text in wanted:
        before = read_text(path)
        if before != text:
            out.append((path, before, text))
    return out


def pending_sysctls(sysctls):
    """{key: {before, after}} for the sysctls whose running value differs."""
    out = {}
    for key in sorted(sysctls):
        before, after = read_sysctl(key), normalized(sysctls[key])
        if before != after:
            out[key] = {"before": before, "after": after}
    return out


def sysctl_diff(pending):
    return {
        "before_header": "running kernel",
        "after_header": "running kernel",
        "before": "".join("%s = %s\n" % (k, "(absent)" if v["before"] is None else v["before"]) for k, v in pending.items()),
        "after": "".join("%s = %s\n" % (k, v["after"]) for k, v in pending.items()),
    }


def write_file(module, path, text):
    directory = os.path.dirname(path)
    if directory and not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    module.atomic_move(tmp, path)


def load_modules(module, missing):
    modprobe = module.get_bin_path("modprobe")
    if not modprobe:
        module.fail_json(msg="loading the kernel modules %s needs modprobe (kmod), which is not installed"
                         % " ".join(missing))
    rc, out, err = module.run_command([modprobe, "-a"] + missing)
    if rc != 0:
        module.fail_json(msg="loading the kernel modules %s failed (modprobe -a): %s"
                         % (" ".join(missing), (err or out).strip()), rc=rc)


def apply_sysctls(module, pending):
    done = {}
    for key, change in pending.items():
        try:
            with open(sysctl_path(key), "w") as handle:
                handle.write(change["after"])
        except OSError as exc:
            # what was set before this one (the ones after it were not tried)
            module.fail_json(msg="setting %s to %s failed: %s" % (key, change["after"], exc), sysctls_set=done)
        done[key] = change


def wanted_files(params):
    files = []
    if params["modules_file"]:
        files.append((params["modules_file"], modules_file_text(params["modules"])))
    if params["sysctl_file"]:
        files.append((params["sysctl_file"], sysctl_file_text(params["sysctls"])))
    return files


def run(module):
    params = module.params
    builtin = builtin_modules()
    missing = [name for name in params["modules"] if not module_present(name, builtin)]
    if missing and not module.check_mode:
        load_modules(module, missing)
    pending = pending_sysctls(params["sysctls"])
    absent = sorted(key for key, change in pending.items() if change["before"] is None)
    if absent and not (module.check_mode and missing):
        module.fail_json(msg="the kernel has no sysctl %s (a module not loaded, or a wrong name); nothing was set"
                         % ", ".join(absent), modules_loaded=missing)
    files = pending_files(wanted_files(params))
    if not module.check_mode:
        for path, _before, text in files:
            write_file(module, path, text)
        apply_sysctls(module, pending)
    result = {
        "changed": bool(missing or pending or files),
        "modules_loaded": missing,
        "sysctls_set": pending,
        "files_written": [path for path, _before, _after in files],
    }
    if module._diff:
        diffs = [{"before_header": path, "after_header": path, "before": before, "after": after}
                 for path, before, after in files]
        if pending:
            diffs.append(sysctl_diff(pending))
        result["diff"] = diffs
    return result


def main():
    module = AnsibleModule(
        argument_spec={
            "sysctls": {"type": "dict", "default": {}},
            "sysctl_file": {"type": "path"},
            "modules": {"type": "list", "elements": "str", "default": []},
            "modules_file": {"type": "path"},
        },
        supports_check_mode=True,
    )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
