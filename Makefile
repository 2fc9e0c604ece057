# The two commands a newcomer needs:
#   make lab    - a local lab of podman containers, provisioned and verified
#   make test   - every test: unit, lint, sanity, Molecule
SHELL := /bin/bash
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export CONTAINERS_CONF := $(CURDIR)/roles/lab/files/containers.conf
export CONTAINERS_STORAGE_CONF := $(CURDIR)/roles/lab/files/storage.conf
export PATH := $(CURDIR)/.venv/bin:$(PATH)
# Ansible's own state (temp files, collections it installs) stays in the checkout.
export ANSIBLE_HOME := $(CURDIR)/.ansible
PLAYBOOK := ansible-playbook

.PHONY: bootstrap bootstrap-lab lab verify failover lab-destroy test unit bench pristine lint sanity molecule ipvs
bootstrap-lab:
	@tools/bootstrap.sh lab
bootstrap:
	@tools/bootstrap.sh test

lab: bootstrap-lab
	$(PLAYBOOK) datagram.director.lab

verify: bootstrap-lab
	$(PLAYBOOK) datagram.director.verify

failover: bootstrap-lab
	$(PLAYBOOK) datagram.director.failover

lab-destroy: bootstrap-lab
	$(PLAYBOOK) datagram.director.lab_destroy

test: bootstrap
	tools/test.sh

# Director CPU per datagram, every data plane side by side in the same seconds:
# prints the table, writes benchmarks/RESULTS.md and benchmarks/ratios.png
# BENCH_ARGS passes options (benchmarks/bench.py --help).
bench: bootstrap
	python benchmarks/bench.py $(BENCH_ARGS)

unit pristine lint sanity molecule ipvs: bootstrap
	tools/test.sh $@
