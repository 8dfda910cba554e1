#!/usr/bin/env bash
# Builds promtool (the Prometheus rule tester) from source through the Go module proxy, cached
# outside the repository keyed by version, like hack/build-control-plane.sh does for helm:
#   $ONUS_CACHE/promtool-$PROMTOOL_VERSION/bin/promtool
# The chart test (tests/chart) renders the PrometheusRule with helm and runs
# `promtool test rules` on it. Prints the bin directory on stdout as a shell assignment.
set -euo pipefail

# Prometheus publishes its Go module as v0.3xx.y for release 3.xx.y.
PROMTOOL_VERSION="${PROMTOOL_VERSION:-v0.316.0}"
ONUS_CACHE="${ONUS_CACHE:-$HOME/.cache/onus}"
export GOFLAGS="${GOFLAGS:-} -p=2"
export CGO_ENABLED=0
# The module may require a newer Go than the one installed; the toolchain comes through the
# module proxy as well.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

log() { echo "build-promtool: $*" >&2; }

bin="$ONUS_CACHE/promtool-$PROMTOOL_VERSION/bin"
if [ -x "$bin/promtool" ]; then
  log "promtool $PROMTOOL_VERSION cached in $bin"
else
  mkdir -p "$bin"
  log "building promtool $PROMTOOL_VERSION (several minutes on two cores)"
  GOBIN="$bin.tmp" go install -trimpath -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
  mv "$bin.tmp/promtool" "$bin/promtool"
  rmdir "$bin.tmp"
fi
echo "ONUS_PROMTOOL_BIN=$bin"
