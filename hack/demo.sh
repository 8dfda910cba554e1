#!/usr/bin/env bash
# The main job, end to end on this machine: start a local Kubernetes control plane, install the
# CRD, run the onus operator, apply the example workloads and policy, and show what users see.
# DEMO_KEEP=1 keeps everything running afterwards (Ctrl-C to stop).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash hack/build-control-plane.sh)"
export PATH="$ONUS_K8S_BIN:$PATH"
work=target/demo
mkdir -p "$work"
rm -f "$work/kubeconfig"

bin="${CARGO_TARGET_DIR:-target}/debug"
cargo build -q --bin onus && cargo build -q -p onus-testenv --bin onus-testenv
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

echo "+ onus-testenv up   (etcd, kube-apiserver, kube-controller-manager on loopback)"
"$bin/onus-testenv" up --kubeconfig "$work/kubeconfig" >/dev/null 2>"$work/testenv.log" &
pids+=($!)
for _ in $(seq 1 300); do [ -f "$work/kubeconfig" ] && break; sleep 0.2; done
[ -f "$work/kubeconfig" ] || { cat "$work/testenv.log"; exit 1; }
export KUBECONFIG="$PWD/$work/kubeconfig"

run() { echo "+ $*"; "$@"; }
run kubectl apply --server-side -f crds/responsibilitypolicy.yaml
run kubectl wait --for=condition=Established crd/responsibilitypolicies.onus.dev --timeout=60s >/dev/null

echo "+ onus   (logs: $work/onus.log)"
"$bin/onus" >"$work/onus.log" 2>&1 &
pids+=($!)

run kubectl apply -f examples/workloads.yaml
run kubectl apply -f examples/policy.yaml
for _ in $(seq 1 100); do
  [ -n "$(kubectl get rp production -o jsonpath='{.status.summary}' 2>/dev/null)" ] && break
  sleep 0.1
done
echo
run kubectl get rp
echo
run kubectl describe rp production
echo
run kubectl get events -n shop --field-selector reason=PolicyViolation
echo
echo "+ kubectl get rp production -o jsonpath='<the responsibility matrix>'"
kubectl get rp production -o jsonpath='{range .status.controls[*]}{.id}{"\t"}{.owner}{"\t"}{.ownerSource}{"\t"}{.result}{"\t"}{.violations}{"\t"}{.examples[0]}{"\n"}{end}' \
  | column -t -s $'\t' -N CONTROL,OWNER,FROM,RESULT,VIOLATIONS,EXAMPLE

echo
echo "# Switch the policy to Enforce: onus applies the safe remediations."
run kubectl patch rp production --type merge -p '{"spec":{"mode":"Enforce"}}'
for _ in $(seq 1 100); do
  [ "$(kubectl get rp production -o jsonpath='{.status.conditions[?(@.type=="Enforced")].reason}')" = EnforceWaiting ] && break
  sleep 0.1
done
run kubectl get rp
run kubectl get networkpolicy -A
run kubectl get namespace shop monitoring -L pod-security.kubernetes.io/enforce,pod-security.kubernetes.io/warn
echo "+ kubectl get rp production -o jsonpath='{.status.conditions[?(@.type==\"Enforced\")].message}'"
kubectl get rp production -o jsonpath='{.status.conditions[?(@.type=="Enforced")].message}'; echo
run kubectl get events --field-selector involvedObject.name=production --sort-by=.lastTimestamp
if [ "${DEMO_KEEP:-}" = 1 ]; then
  echo; echo "export KUBECONFIG=$KUBECONFIG   # the cluster keeps running; Ctrl-C to stop"
  wait
fi
