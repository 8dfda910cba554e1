#!/usr/bin/env bash
# The main job, end to end on this machine: start a local Kubernetes control plane, install the
# CRD, run the onus operator, apply the example workloads and policy, and show what users see.
# DEMO_KEEP=1 keeps everything running afterwards (Ctrl-C to stop). tests/readme.rs runs it against
# a control plane of its own (DEMO_KUBECONFIG, DEMO_ONUS_BIN) and compares with the README.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash hack/build-control-plane.sh)"
export PATH="$ONUS_K8S_BIN:$PATH"
work=target/demo
mkdir -p "$work"
rm -f "$work/kubeconfig"

bin="${CARGO_TARGET_DIR:-target}/debug"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

if [ -n "${DEMO_KUBECONFIG:-}" ]; then
  onus="$DEMO_ONUS_BIN"
  export KUBECONFIG="$DEMO_KUBECONFIG"
else
  cargo build -q --bin onus && cargo build -q -p onus-testenv --bin onus-testenv
  onus="$bin/onus"
  echo "+ onus-testenv up   (etcd, kube-apiserver, kube-controller-manager on loopback)"
  "$bin/onus-testenv" up --kubeconfig "$work/kubeconfig" >/dev/null 2>"$work/testenv.log" &
  pids+=($!)
  for _ in $(seq 1 300); do [ -f "$work/kubeconfig" ] && break; sleep 0.2; done
  [ -f "$work/kubeconfig" ] || { cat "$work/testenv.log"; exit 1; }
  export KUBECONFIG="$PWD/$work/kubeconfig"
fi

# Prints the command as it could be typed (arguments with shell syntax in single quotes), then runs it.
run() {
  local shown=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then shown+=("$a"); else shown+=("'$a'"); fi
  done
  echo "+ ${shown[*]}"
  "$@"
}
# Prints a command line as typed (a pipeline, shell quoting), then has bash run exactly that line.
typed() {
  echo "+ $1"
  eval "$1"
}
run kubectl apply --server-side -f crds/responsibilitypolicy.yaml
# (Polled: `kubectl wait --for=condition=Established` fails at once when it reads the CRD before
# the API server has written any condition.)
for _ in $(seq 1 600); do
  [ "$(kubectl get crd responsibilitypolicies.onus.dev \
    -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" = True ] && break
  sleep 0.1
done
# Discovery follows the condition: until kubectl finds the kind, applying a policy fails.
for _ in $(seq 1 300); do
  kubectl get responsibilitypolicies.onus.dev -o name >/dev/null 2>&1 && break
  sleep 0.2
done

echo "+ onus   (logs: $work/onus.log)"
"$onus" --no-leader-election --http-addr 127.0.0.1:0 >"$work/onus.log" 2>&1 &
pids+=($!)

run kubectl apply -f examples/workloads.yaml
run kubectl apply -f examples/policy.yaml
for _ in $(seq 1 300); do
  [ -n "$(kubectl get rp production -o jsonpath='{.status.summary}' 2>/dev/null)" ] && break
  sleep 0.1
done
# The first status can come before onus has seen every object just applied (each kind has a
# watch of its own, and onus may have started watching before they were applied): wait until
# the status holds still for a second.
last=
for _ in $(seq 1 30); do
  now=$(kubectl get rp production -o jsonpath='{.metadata.resourceVersion}')
  [ "$now" = "$last" ] && break
  last=$now
  sleep 1
done
echo
run kubectl get rp
echo
run kubectl describe rp production
echo
# Violation Events follow the status write (one publisher, at most 50 per second): wait until
# their number holds still for a second.
settled() {
  local last=-1 now
  for _ in $(seq 1 50); do
    now=$(kubectl get events "$@" -o name | wc -l)
    [ "$now" -gt 0 ] && [ "$now" = "$last" ] && return
    last=$now
    sleep 1
  done
}
settled -n shop --field-selector reason=PolicyViolation
run kubectl get events -n shop --field-selector reason=PolicyViolation
echo
matrix='{range .status.controls[*]}{.id}{"\t"}{.owner}{"\t"}{.ownerSource}{"\t"}{.result}{"\t"}{.violations}{"\t"}{.examples[0]}{"\n"}{end}'
typed "kubectl get rp production -o jsonpath='$matrix' | column -t -s \$'\\t' -N CONTROL,OWNER,FROM,RESULT,VIOLATIONS,EXAMPLE"

echo
echo "# Switch the policy to Enforce: onus applies the safe remediations."
run kubectl patch rp production --type merge -p '{"spec":{"mode":"Enforce"}}'
for _ in $(seq 1 300); do
  [ "$(kubectl get rp production -o jsonpath='{.status.conditions[?(@.type=="Enforced")].reason}')" = EnforceWaiting ] && break
  sleep 0.1
done
run kubectl get rp
run kubectl get networkpolicy -A
run kubectl get namespace shop monitoring -L pod-security.kubernetes.io/enforce,pod-security.kubernetes.io/warn
typed "kubectl get rp production -o jsonpath='{.status.conditions[?(@.type==\"Enforced\")].message}'"; echo
settled -n default --field-selector involvedObject.name=production
run kubectl get events -n default --field-selector involvedObject.name=production --sort-by=.lastTimestamp

echo
echo "# Prevention at admission: the ValidatingAdmissionPolicies onus generated for the Enforce policy."
# The CI robot of examples/workloads.yaml (cluster-admin through ci-deployer-admin) tries to make
# user zed cluster-admin too; the admin running the demo is in system:masters, which is exempt.
# Until the API server has loaded the policies a request is not judged yet: wait for a denial.
for _ in $(seq 1 300); do
  kubectl --as=system:serviceaccount:shop:deployer create clusterrolebinding x \
    --clusterrole=cluster-admin --user=zed --dry-run=server >/dev/null 2>&1 || break
  sleep 0.1
done
# onus writes them one after another and then the status: wait for the last one (DAT-01's).
for _ in $(seq 1 300); do
  [ "$(kubectl get rp production -o jsonpath='{.status.controls[?(@.id=="DAT-01")].admission}')" = Deny ] && break
  sleep 0.1
done
run kubectl get validatingadmissionpolicy -l app.kubernetes.io/managed-by=onus
typed "kubectl --as=system:serviceaccount:shop:deployer create clusterrolebinding x --clusterrole=cluster-admin --user=zed 2>&1 || true"
typed "kubectl get rp production -o jsonpath='{range .status.controls[*]}{.id}{\"\\t\"}{.result}{\"\\t\"}{.admission}{\"\\n\"}{end}' | sed -n 1,8p"

echo
echo "# Two more policies: one with an invalid spec, one that leaves a customer-owned family unchecked."
run kubectl apply -f examples/more-policies.yaml
for _ in $(seq 1 300); do
  [ -n "$(kubectl get rp staging -o jsonpath='{.status.conditions}' 2>/dev/null)" ] \
    && [ -n "$(kubectl get rp sandbox -o jsonpath='{.status.summary}' 2>/dev/null)" ] && break
  sleep 0.1
done
run kubectl get rp -o wide
typed "kubectl get rp staging -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].message}'"; echo
if [ "${DEMO_KEEP:-}" = 1 ]; then
  echo; echo "export KUBECONFIG=$KUBECONFIG   # the cluster keeps running; Ctrl-C to stop"
  wait
fi
