#!/usr/bin/env bash
# The `onus check` benchmark (BENCHMARKS.md, "onus check vs kube-score"): 10k manifests of the
# bench fixture, one object a YAML file, read by the release `onus check` and by kube-score
# v1.20.0 in the same run. Not part of `make test`.
#
#   cargo build --release --bin onus && cargo build -p onus-bench
#   GOBIN=~/.cache/onus/kube-score-v1.20.0 go install github.com/zegl/kube-score/cmd/kube-score@v1.20.0
#   bash bench/check-vs-kube-score.sh [OBJECTS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
objects=${1:-10000}
runs=${2:-3}
onus=${ONUS:-target/release/onus}
kube_score=${KUBE_SCORE:-$HOME/.cache/onus/kube-score-v1.20.0/kube-score}
dir=${MANIFESTS:-target/bench/manifests-$objects}
for bin in "$onus" "$kube_score" target/debug/onus-bench; do
  [[ -x $bin ]] || { echo "missing $bin (see the header of $0)" >&2; exit 2; }
done
if [[ ! -d $dir ]]; then
  target/debug/onus-bench manifests "$dir" "$objects"
fi
files=$(find "$dir" -type f -name '*.yaml' | wc -l)
[[ $files -eq $objects ]] || { echo "$dir holds $files files, not $objects" >&2; exit 2; }
mapfile -t list < <(find "$dir" -type f -name '*.yaml' | sort)

# Seconds (wall) and peak RSS (KiB) of one command; its exit code 0 or 1 (findings) is fine.
measure() {
  local t
  t=$(mktemp)
  /usr/bin/time -o "$t" -f '%e %M %U %S' "$@" >/dev/null 2>&1 || true
  tail -1 "$t"
  rm -f "$t"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A secs rss cpu
for tool in onus kube-score; do
  s=(); m=(); c=()
  for _ in $(seq "$runs"); do
    case $tool in
      onus) r=$(measure "$onus" check -f "$dir" -o json) ;;
      kube-score) r=$(measure "$kube_score" score -o ci "${list[@]}") ;;
    esac
    read -r e k u sy <<<"$r"
    s+=("$e"); m+=("$k"); c+=("$(awk -v u="$u" -v s="$sy" 'BEGIN {print u + s}')")
  done
  secs[$tool]=$(printf '%s\n' "${s[@]}" | median)
  rss[$tool]=$(printf '%s\n' "${m[@]}" | median)
  cpu[$tool]=$(printf '%s\n' "${c[@]}" | median)
  echo "$tool: runs ${s[*]} s; median ${secs[$tool]} s wall, ${cpu[$tool]} s CPU, peak RSS ${rss[$tool]} KiB" >&2
done
rate() { awk -v n="$objects" -v s="$1" 'BEGIN {printf "%.0f", n / s}'; }
echo "| tool | objects | wall (median of $runs) | objects/s (wall) | CPU (user+sys) | objects/CPU-s | peak RSS |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for tool in onus kube-score; do
  echo "| $tool | $objects | ${secs[$tool]} s | $(rate "${secs[$tool]}") | ${cpu[$tool]} s | $(rate "${cpu[$tool]}") | $(( ${rss[$tool]} / 1024 )) MiB |"
done
awk -v a="${secs[kube-score]}" -v b="${secs[onus]}" -v ca="${cpu[kube-score]}" -v cb="${cpu[onus]}" \
  'BEGIN {printf "\nonus check vs kube-score: %.1fx by wall time, %.1fx by CPU time\n", a / b, ca / cb}'
