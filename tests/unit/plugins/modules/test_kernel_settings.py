# -*- coding: utf-8 -*-
# Copyright (c) datagram.director developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kernel_settings' pure parts; tests/integration/test_kernel_settings.py runs it on a real /proc/sys."""

from __future__ import annotations

import os

from ansible_collections.datagram.director.plugins.modules import kernel_settings as ks


def test_values_compare_field_by_field_whatever_the_spacing():
    assert ks.normalized("32768\t60999\n") == ks.normalized("32768 60999") == "32768 60999"
    assert ks.normalized(True) == "1" and ks.normalized(0) == "0"


def test_files_list_every_setting_sorted_after_a_header():
    text = ks.sysctl_file_text({"net.ipv4.vs.conntrack": 0, "net.ipv4.ip_forward": True})
    assert text.splitlines() == [ks.HEADER.strip(), "net.ipv4.ip_forward = 1", "net.ipv4.vs.conntrack = 0"]
    assert ks.modules_file_text(["ip_vs", "ip_vs_rr"]).splitlines()[1:] == ["ip_vs", "ip_vs_rr"]


def test_pending_sysctls_reads_proc_sys(tmp_path, monkeypatch):
    monkeypatch.setattr(ks, "PROC_SYS", str(tmp_path))
    (tmp_path / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "net" / "ipv4" / "ip_forward").write_text("1\n")
    pending = ks.pending_sysctls({"net.ipv4.ip_forward": 1, "net.ipv4.vs.conntrack": 0})
    assert pending == {"net.ipv4.vs.conntrack": {"before": None, "after": "0"}}


def test_a_module_is_present_when_loaded_or_built_in(tmp_path, monkeypatch):
    monkeypatch.setattr(ks, "SYS_MODULE", str(tmp_path / "sys"))
    (tmp_path / "sys" / "ip_vs_rr").mkdir(parents=True)
    assert ks.module_present("ip_vs_rr") and ks.module_present("ip-vs-rr") and not ks.module_present("ip_vs")
    # a built-in module without parameters has no /sys/module entry: modules.builtin lists it
    monkeypatch.setattr(ks, "LIB_MODULES", str(tmp_path / "lib"))
    release = tmp_path / "lib" / os.uname().release
    release.mkdir(parents=True)
    (release / "modules.builtin").write_text("kernel/net/netfilter/ipvs/ip_vs.ko\nkernel/net/netfilter/ipvs/ip_vs_wrr.ko\n")
    builtin = ks.builtin_modules()
    assert builtin == {"ip_vs", "ip_vs_wrr"}
    assert ks.module_present("ip_vs", builtin) and not ks.module_present("ip_vs_sh", builtin)
