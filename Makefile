# The two commands a newcomer needs:
#   make lab    - a local lab of podman containers, provisioned and verified
#   make test   - every test: unit, lint, sanity, Molecule
SHELL := /bin/bash
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export CONTAINERS_CONF := $(CURDIR)/roles/lab/files/containers.conf
export CONTAINERS_STORAGE_CONF := $(CURDIR)/roles/lab/files/storage.conf
export PATH := $(CURDIR)/.venv/bin:$(PATH)
PLAYBOOK := ansible-playbook

.PHONY: bootstrap lab verify failover lab-destroy test unit lint sanity molecule ipvs
bootstrap:
	@tools/bootstrap.sh

lab: bootstrap
	$(PLAYBOOK) datagram.director.lab

verify: bootstrap
	$(PLAYBOOK) datagram.director.verify

failover: bootstrap
	$(PLAYBOOK) datagram.director.failover

lab-destroy: bootstrap
	$(PLAYBOOK) datagram.director.lab_destroy

test: bootstrap
	tools/test.sh

unit: bootstrap
	tools/test.sh unit
lint: bootstrap
	tools/test.sh lint
sanity: bootstrap
	tools/test.sh sanity
molecule: bootstrap
	tools/test.sh molecule
ipvs: bootstrap
	tools/test.sh ipvs
