#!/usr/bin/env bash
# Fetches the policy report CRDs from the Go modules that publish them, through the Go module
# proxy (checked against the checksum database and the sums pinned below), and copies their YAML
# into a cache outside the repository, keyed by module version:
#   $ONUS_CACHE/report-crds/openreports-$OPENREPORTS_VERSION/*.yaml  (openreports.io/v1alpha1)
#   $ONUS_CACHE/report-crds/kyverno-$KYVERNO_VERSION/*.yaml          (wgpolicyk8s.io/v1alpha2)
# The PolicyReports tests (tests/reports.rs) install them on the test API server; nothing here
# is written by hand. Prints the cache directory on stdout as a shell assignment.
set -euo pipefail

OPENREPORTS_VERSION="${OPENREPORTS_VERSION:-v0.2.1}"
OPENREPORTS_SUM="h1:g9KS3yle9Y1elmww4TK9EkD1rl6inIaiIJPX6e+u680="
# Kyverno's module carries the wgpolicyk8s.io CRDs under config/crds/policyreport.
KYVERNO_VERSION="${KYVERNO_VERSION:-v1.13.4}"
KYVERNO_SUM="h1:2zUi+eszlisLdCir+WIf2NtuUfFPvJtjUNpewdtLjVw="
ONUS_CACHE="${ONUS_CACHE:-$HOME/.cache/onus}"
# Outside any module: `go mod download` then only fetches the module asked for.
export GOFLAGS=-mod=mod
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

log() { echo "fetch-report-crds: $*" >&2; }

# fetch MODULE VERSION SUM DEST FILE... : copies FILEs (paths inside the module) into DEST.
fetch() {
  local module="$1" version="$2" sum="$3" dest="$4"
  shift 4
  if [ -f "$dest/.complete" ]; then
    log "$module@$version cached in $dest"
    return
  fi
  log "downloading $module@$version through the module proxy"
  local scratch json dir got
  scratch="$(mktemp -d)"
  json="$(cd "$scratch" && go mod download -json "$module@$version")"
  rmdir "$scratch"
  dir="$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  got="$(printf '%s' "$json" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p')"
  if [ "$got" != "$sum" ]; then
    log "$module@$version: checksum $got, expected $sum"
    exit 1
  fi
  rm -rf "$dest.tmp"
  mkdir -p "$dest.tmp"
  for file in "$@"; do
    cp "$dir/$file" "$dest.tmp/"
  done
  chmod u+w "$dest.tmp"/*
  touch "$dest.tmp/.complete"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
}

root="$ONUS_CACHE/report-crds"
fetch github.com/openreports/reports-api "$OPENREPORTS_VERSION" "$OPENREPORTS_SUM" \
  "$root/openreports-$OPENREPORTS_VERSION" \
  config/crd/openreports.io_reports.yaml config/crd/openreports.io_clusterreports.yaml
fetch github.com/kyverno/kyverno "$KYVERNO_VERSION" "$KYVERNO_SUM" \
  "$root/kyverno-$KYVERNO_VERSION" \
  config/crds/policyreport/wgpolicyk8s.io_policyreports.yaml \
  config/crds/policyreport/wgpolicyk8s.io_clusterpolicyreports.yaml
echo "ONUS_REPORT_CRDS=$root"
