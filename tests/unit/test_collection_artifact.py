# -*- coding: utf-8 -*-
# Copyright: datagram.director developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The built collection is the product: `ansible-galaxy collection build`
leaves out the lab, the drills, the tests and the tools, and keeps every
role, playbook and plugin the product uses (every ``datagram.director.X`` a
shipped file names resolves inside the tarball).

The lists below are written from what the product is, not read from
galaxy.yml (the code under test)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Development material: not installed.
DEV_TOPS = (".ci", ".venv", ".cache", ".ansible", ".collections", ".hypothesis", ".pytest_cache", ".gitignore",
            ".ansible-lint", "artifacts", "molecule", "tests", "tools", "benchmarks", "inventories", "Makefile",
            "pytest.ini", "requirements.txt", "ansible.cfg")
# The lab and the drills (failover stops keepalived on the master).
LAB = ("roles/lab/", "roles/lab_realserver/", "playbooks/lab.yml", "playbooks/lab_destroy.yml",
       "playbooks/failover.yml", "playbooks/drill.yml", "playbooks/drills/",
       "plugins/filter/drill_figures.py", "plugins/filter/drill_table.py", "plugins/filter/health_drill.py")
# The product: provision, verify, drain and enable, flush.
ROLES = ("preflight", "nftables", "ipvs", "health", "vrrp", "flow_audit")
PLAYBOOKS = ("site", "verify", "realserver", "flush_stuck")
FQCN = re.compile(r"(?<!ansible_collections\.)\bdatagram\.director\.([a-z][a-z0-9_]*)\b")
MODULE_UTILS = re.compile(r"ansible_collections\.datagram\.director\.plugins\.module_utils\.([a-z][a-z0-9_]*)")
ROLE_PATH = re.compile(r"role_path\s*}}/\.\./\.\./([\w./-]+)")
IMPORTED_PLAYBOOK = re.compile(r"import_playbook:\s*([\w./-]+\.yml)\s*$", re.M)


def build(repo, out):
    """Build the collection in ``repo`` into ``out``; the tarball's path."""
    galaxy = os.path.join(REPO, ".venv", "bin", "ansible-galaxy")
    galaxy = galaxy if os.path.exists(galaxy) else shutil.which("ansible-galaxy")
    if not galaxy:
        pytest.skip("needs ansible-core (tools/bootstrap.sh)")
    subprocess.run([galaxy, "collection", "build", "--output-path", str(out), repo],
                   check=True, capture_output=True, text=True, timeout=120)
    tarballs = [name for name in os.listdir(str(out)) if name.endswith(".tar.gz")]
    assert len(tarballs) == 1, tarballs
    return os.path.join(str(out), tarballs[0])


def read_tarball(path):
    """{file name: text} of every regular file in the tarball."""
    files = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if member.isfile():
                name = member.name[2:] if member.name.startswith("./") else member.name
                files[name] = tar.extractfile(member).read().decode("utf-8", "replace")
    return files


def problems(files):
    """Everything wrong with a tarball's files, one line each (empty: fine)."""
    out = []
    out += ["development file %s" % name for name in files if name.split("/", 1)[0] in DEV_TOPS]
    out += ["lab file %s" % name for name in files if name.startswith(LAB)]
    out += ["changelog fragment %s" % name for name in files if name.startswith("changelogs/fragments/")]
    need = ["MANIFEST.json", "FILES.json", "README.md", "meta/runtime.yml"]
    need += ["roles/%s/%s" % (role, part) for role in ROLES for part in ("tasks/main.yml", "meta/argument_specs.yml")]
    need += ["playbooks/%s.yml" % name for name in PLAYBOOKS]
    out += ["missing %s" % name for name in need if name not in files]
    out += unresolved(files)
    return out


def unresolved(files):
    """References in shipped files that point at nothing shipped."""
    filters = set()
    for name, text in files.items():
        if name.startswith("plugins/filter/"):
            filters.update(re.findall(r"""["']([a-z][a-z0-9_]*)["']\s*:\s*[a-z_]""", text))
    plugins = set(os.path.splitext(os.path.basename(n))[0] for n in files if n.startswith("plugins/"))
    roles = set(n.split("/")[1] for n in files if n.startswith("roles/"))
    playbooks = set(os.path.splitext(n.split("/")[1])[0] for n in files if n.startswith("playbooks/"))
    out = []
    for name, text in sorted(files.items()):
        if not name.endswith((".yml", ".j2", ".py")) or name.endswith(".json"):
            continue
        for ref in FQCN.findall(text):
            if ref not in roles | playbooks | plugins | filters:
                out.append("%s names datagram.director.%s, not in the tarball" % (name, ref))
        for ref in MODULE_UTILS.findall(text):
            if "plugins/module_utils/%s.py" % ref not in files and "plugins/module_utils/%s/__init__.py" % ref not in files:
                out.append("%s imports module_utils.%s, not in the tarball" % (name, ref))
        for ref in ROLE_PATH.findall(text):
            if ref not in files:
                out.append("%s copies %s, not in the tarball" % (name, ref))
        if name.startswith("playbooks/"):
            for ref in IMPORTED_PLAYBOOK.findall(text):
                if os.path.normpath(os.path.join("playbooks", ref)) not in files:
                    out.append("%s imports %s, not in the tarball" % (name, ref))
    return out


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return read_tarball(build(REPO, tmp_path_factory.mktemp("build")))


def test_artifact_is_the_product(artifact):
    assert problems(artifact) == []


def test_artifact_holds_every_plugin_of_the_checkout_but_the_lab_ones(artifact):
    plugins = []
    for root, _dirs, names in os.walk(os.path.join(REPO, "plugins")):
        rel = os.path.relpath(root, REPO)
        plugins += [os.path.join(rel, n) for n in names if n.endswith(".py")]
    assert len(plugins) > 20
    assert sorted(p for p in plugins if not p.startswith(LAB) and p not in artifact) == []


def test_a_lab_role_in_the_artifact_is_found(artifact):
    """The check itself can fail: the same files plus a lab role and a product
    playbook whose role is gone."""
    files = dict(artifact)
    files["roles/lab/tasks/main.yml"] = "---\n"
    files["tests/unit/test_x.py"] = ""
    del files["roles/vrrp/tasks/main.yml"], files["roles/vrrp/meta/argument_specs.yml"]
    for name in [n for n in files if n.startswith("roles/vrrp/")]:
        del files[name]
    found = problems(files)
    assert "lab file roles/lab/tasks/main.yml" in found and "development file tests/unit/test_x.py" in found
    assert "missing roles/vrrp/tasks/main.yml" in found
    assert "playbooks/site.yml names datagram.director.vrrp, not in the tarball" in found
