#!/usr/bin/env bash
# Builds the Kyverno CLI v1.19.1 (`cmd/cli/kubectl-kyverno` of github.com/kyverno/kyverno) for the
# `onus check` benchmark (bench/check-vs-kube-score.sh) into ~/.cache/onus/kyverno-v1.19.1/kyverno,
# from the wrapper module bench/kyverno-cli (its go.mod requires kyverno v1.19.1 and copies
# kyverno's own `replace` of k8s.io/pod-security-admission; go.sum pins every module). Not part
# of `make test`. A large build (several hundred modules): run it once, under `nice`.
set -euo pipefail
cd "$(dirname "$0")/kyverno-cli"
out=${KYVERNO_DIR:-$HOME/.cache/onus/kyverno-v1.19.1}
if [[ -x $out/kyverno ]]; then
  echo "$out/kyverno is there"
  exit 0
fi
# kyverno v1.19.1 asks for go 1.26.6; an older local Go fetches that toolchain itself.
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
export GOFLAGS=-mod=readonly
mkdir -p "$out"
nice -n 19 go build -trimpath -ldflags='-s -w' -o "$out/kyverno.tmp" \
  github.com/kyverno/kyverno/cmd/cli/kubectl-kyverno
mv "$out/kyverno.tmp" "$out/kyverno"
"$out/kyverno" version
