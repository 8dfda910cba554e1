#!/usr/bin/env bash
# Runs two `onus` binaries' `onus check` on the same inputs and compares stdout, stderr and the
# exit code byte for byte: the check fixtures and examples, each with the four output formats,
# without and with each policy, with `--kube-version` and `-n`, through stdin (YAML and JSON),
# and the bench's manifests when they exist. Not part of `make test`.
#
#   bash bench/check-same-output.sh BASELINE_ONUS NEW_ONUS [EXTRA_PATH...]
set -uo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2
shift 2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fx=tests/fixtures/check
inputs=("$fx/cluster" "$fx/compliant" "$fx/broken" "$fx/agreement" "$fx/cluster/list.json" examples "$@")
[[ -d target/bench/manifests-10000 ]] && inputs+=(target/bench/manifests-10000)
policies=("" "$fx/policy.yaml" "$fx/agreement-policy.yaml" examples/policy.yaml)
runs=0 differ=0
compare() { # compare NAME STDIN_FILE ARGS...
  local name=$1 input=$2
  shift 2
  for bin in a b; do
    local exe=$a
    [[ $bin == b ]] && exe=$b
    "$exe" check "$@" <"$input" >"$work/$bin.out" 2>"$work/$bin.err"
    echo $? >"$work/$bin.code"
  done
  runs=$((runs + 1))
  for part in out err code; do
    if ! cmp -s "$work/a.$part" "$work/b.$part"; then
      differ=$((differ + 1))
      echo "DIFFERENT $part: $name: check $*" >&2
      diff <(head -c 4000 "$work/a.$part") <(head -c 4000 "$work/b.$part") | head -20 >&2
    fi
  done
}
for input in "${inputs[@]}"; do
  [[ -e $input ]] || continue
  for format in table json sarif junit; do
    for policy in "${policies[@]}"; do
      p=()
      [[ -n $policy ]] && p=(--policy "$policy")
      compare "$input" /dev/null -f "$input" -o "$format" "${p[@]}"
    done
  done
  compare "$input" /dev/null -f "$input" --kube-version v1.30 -o json
  compare "$input" /dev/null -f "$input" -n shop -o table
done
# stdin: every fixture file as one YAML stream, and a JSON List.
find "$fx" examples -name '*.yaml' ! -name '*policy*' | sort | while read -r f; do cat "$f"; echo '---'; done >"$work/stream.yaml"
for format in table json sarif junit; do
  compare stdin-yaml "$work/stream.yaml" -f - -o "$format"
  compare stdin-json "$fx/cluster/list.json" -f - -o "$format"
done
compare all-at-once /dev/null -f "$fx" -f examples -f - -o json
echo "$runs runs, $differ parts different" >&2
[[ $differ -eq 0 ]]
