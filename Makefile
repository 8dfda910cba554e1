# The two commands a newcomer needs:
#   make demo   - build what is needed, start a local Kubernetes control plane, run onus against it
#   make test   - the whole test suite (unit, integration against a real kube-apiserver, chart)
#   make bench  - the real onus binary against a real control plane (not part of make test)
SHELL := /bin/bash
.PHONY: test test-oldest demo tools lint crds docs bench bench-smoke bench-allocators fuzz

# Builds (once, then cached under ~/.cache/onus) kube-apiserver, kube-controller-manager, kubectl,
# helm, and promtool (the chart test runs the PrometheusRule's unit tests with it); installs
# Debian's headless Chromium if missing (the report test renders the HTML report in it); fetches
# the policy report CRDs from their Go modules (tests/reports.rs installs them).
tools:
	bash hack/build-control-plane.sh >/dev/null
	bash hack/build-promtool.sh >/dev/null
	bash hack/install-browser.sh
	bash hack/fetch-report-crds.sh >/dev/null

# Every control plane of the suite leaves its API server's audit log in AUDIT_LOGS; the last
# step checks that onus wrote nothing outside its scope in any of them (tests/suite_write_scope.rs).
AUDIT_LOGS = $(or $(CARGO_TARGET_DIR),target)/audit-logs
test: tools
	rm -rf $(AUDIT_LOGS)
	ONUS_AUDIT_DIR=$(abspath $(AUDIT_LOGS)) cargo test --workspace --all-targets
	ONUS_CHECK_AUDIT_DIR=$(abspath $(AUDIT_LOGS)) cargo test --test suite_write_scope
	bash hack/check-no-leaks.sh

# The oldest Kubernetes onus supports (the chart's kubeVersion): every integration test runs
# against its kube-apiserver and kube-controller-manager too, built the same way (CI runs it
# after make test; the first build takes another 20-30 minutes).
OLDEST_K8S ?= v1.34.4
ONUS_CACHE_DIR := $(or $(ONUS_CACHE),$(HOME)/.cache/onus)
test-oldest: tools
	K8S_VERSION=$(OLDEST_K8S) bash hack/build-control-plane.sh >/dev/null
	ONUS_K8S_VERSION=$(OLDEST_K8S) ONUS_K8S_BIN=$(ONUS_CACHE_DIR)/k8s-$(OLDEST_K8S)/bin \
	  cargo test --workspace --test '*'
	bash hack/check-no-leaks.sh

demo: tools
	bash hack/demo.sh

# The mutation fuzzer of tests/hostile_input.rs (policy and object decoding) for FUZZ_SECS
# seconds per target (make test runs it 10 s each); FUZZ_SEED replays a reported failure.
FUZZ_SECS ?= 600
fuzz:
	ONUS_FUZZ_SECS=$(FUZZ_SECS) $(if $(FUZZ_SEED),ONUS_FUZZ_SEED=$(FUZZ_SEED)) \
	  cargo test --test hostile_input fuzz_ -- --nocapture

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Regenerates the CRD from the Rust types (a test fails when crds/ drifts from them).
crds:
	cargo run -q --bin crdgen > crds/responsibilitypolicy.yaml

# Regenerates docs/controls.md from the control catalog (a test fails when it drifts).
docs:
	cargo run -q --bin catalog-doc > docs/controls.md

# Renders deploy/onus.yaml (plain manifests, default values) from the chart, after copying the
# CRD into the chart; tests/chart.rs fails when either copy drifts. Rendered for the oldest
# Kubernetes the chart supports (1.34, which serves ValidatingAdmissionPolicy, so the admission
# policy that restrains onus's own writes is included), without Helm's labels: these manifests
# are applied with kubectl, and Helm must not take them for a release of its own.
HELM ?= $(or $(ONUS_HELM_BIN),$(or $(ONUS_CACHE),$(HOME)/.cache/onus)/helm-v3.22.0/bin)/helm
.PHONY: deploy
deploy: tools
	cp crds/responsibilitypolicy.yaml charts/onus/crds/responsibilitypolicy.yaml
	$(HELM) template onus charts/onus --namespace onus-system --include-crds --kube-version 1.34.0 \
	  --api-versions admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy \
	  | sed -e '/^ *helm\.sh\/chart: /d' -e '/^ *app\.kubernetes\.io\/managed-by: Helm$$/d' > deploy/onus.yaml

# make bench: builds release, starts the test control plane, creates the fixture of SIZE (S, M
# or L; see bench/src/fixture.rs), runs the real onus binary RUNS times and prints one table
# (also in target/bench/results-$(SIZE).md). Fails on a wrong status count, on requests while
# idle, and on a missed goal of issue 9.
SIZE ?= M
RUNS ?= 3
BENCH_FLAGS ?=
# Cargo's target directory (CARGO_TARGET_DIR when set).
TARGET ?= $(or $(CARGO_TARGET_DIR),target)
RELEASE := $(TARGET)/release
bench: tools
	cargo build --release -p onus -p onus-bench --bin onus --bin onus-bench
	$(RELEASE)/onus-bench --onus $(RELEASE)/onus --size $(SIZE) --runs $(RUNS) $(BENCH_FLAGS)

# The CI smoke: size S, fewer probes, no timing goals (status counts and idle requests are
# still asserted).
bench-smoke: tools
	cargo build --release -p onus -p onus-bench --bin onus --bin onus-bench
	$(RELEASE)/onus-bench --onus $(RELEASE)/onus --size S --quick $(BENCH_FLAGS)

# Cold start and RSS of the operator with each allocator (system, jemalloc, mimalloc), each a
# separate binary under target/bench/.
bench-allocators: tools
	mkdir -p $(TARGET)/bench
	cargo build --release -p onus-bench
	cargo build --release --bin onus --no-default-features
	cp $(RELEASE)/onus $(TARGET)/bench/onus-system
	cargo build --release --bin onus --no-default-features --features jemalloc
	cp $(RELEASE)/onus $(TARGET)/bench/onus-jemalloc
	cargo build --release --bin onus --no-default-features --features mimalloc
	cp $(RELEASE)/onus $(TARGET)/bench/onus-mimalloc
	cargo build --release --bin onus
	$(RELEASE)/onus-bench --onus $(TARGET)/bench/onus-system --size $(SIZE) --runs $(RUNS) \
	  --allocators system=$(TARGET)/bench/onus-system,jemalloc=$(TARGET)/bench/onus-jemalloc,mimalloc=$(TARGET)/bench/onus-mimalloc \
	  --allocators-only $(BENCH_FLAGS)
