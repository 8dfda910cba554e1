# The two commands a newcomer needs:
#   make demo   - build what is needed, start a local Kubernetes control plane, run onus against it
#   make test   - the whole test suite (unit, integration against a real kube-apiserver, chart)
SHELL := /bin/bash
.PHONY: test demo tools lint crds

# Builds (once, then cached under ~/.cache/onus) kube-apiserver, kube-controller-manager, kubectl, helm.
tools:
	bash hack/build-control-plane.sh >/dev/null

test: tools
	cargo test --workspace --all-targets
	bash hack/check-no-leaks.sh

demo: tools
	bash hack/demo.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Regenerates the CRD from the Rust types (a test fails when crds/ drifts from them).
crds:
	cargo run -q --bin crdgen > crds/responsibilitypolicy.yaml

# Renders deploy/onus.yaml (plain manifests, default values) from the chart, after copying the
# CRD into the chart; tests/chart.rs fails when either copy drifts.
HELM ?= $(or $(ONUS_HELM_BIN),$(or $(ONUS_CACHE),$(HOME)/.cache/onus)/helm-v3.22.0/bin)/helm
.PHONY: deploy
deploy: tools
	cp crds/responsibilitypolicy.yaml charts/onus/crds/responsibilitypolicy.yaml
	$(HELM) template onus charts/onus --namespace onus-system --include-crds > deploy/onus.yaml
