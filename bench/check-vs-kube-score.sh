#!/usr/bin/env bash
# The `onus check` benchmark (BENCHMARKS.md, "onus check vs kube-score and the Kyverno CLI"): 10k
# manifests of the bench fixture, one object a YAML file, read by the release `onus check`, by
# kube-score v1.20.0 and (when built) by the Kyverno CLI v1.19.1 with a `validate.podSecurity`
# policy (bench/kyverno-pss-restricted.yaml), in the same run; then the Deployments Kyverno
# finds failing Pod Security restricted are compared with those onus check's WKL controls name.
# Not part of `make test`.
#
#   cargo build --release --bin onus && cargo build -p onus-bench
#   GOBIN=~/.cache/onus/kube-score-v1.20.0 go install github.com/zegl/kube-score/cmd/kube-score@v1.20.0
#   bash bench/build-kyverno.sh      # optional: ~/.cache/onus/kyverno-v1.19.1/kyverno
#   [KYVERNO_RUNS=N] [VERDICTS=0] bash bench/check-vs-kube-score.sh [OBJECTS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
objects=${1:-10000}
runs=${2:-3}
onus=${ONUS:-target/release/onus}
kube_score=${KUBE_SCORE:-$HOME/.cache/onus/kube-score-v1.20.0/kube-score}
kyverno=${KYVERNO:-$HOME/.cache/onus/kyverno-v1.19.1/kyverno}
kyverno_policy=bench/kyverno-pss-restricted.yaml
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
tools=(onus kube-score)
if [[ -x $kyverno ]]; then
  tools+=(kyverno)
  # `kyverno apply --resource DIR` reads only the files directly in DIR: a flat directory of
  # links to the same files.
  flat=$dir.flat
  if [[ ! -d $flat ]]; then
    mkdir -p "$flat.tmp"
    for f in "${list[@]}"; do
      d=${f%/*}
      ln -s "$(realpath "$d")/${f##*/}" "$flat.tmp/${d##*/}-${f##*/}"
    done
    mv "$flat.tmp" "$flat"
  fi
else
  echo "no $kyverno (bash bench/build-kyverno.sh): kube-score only" >&2
fi

# Seconds (wall) and peak RSS (KiB) of one command; its exit code 0 or 1 (findings) is fine.
measure() {
  local t
  t=$(mktemp)
  /usr/bin/time -o "$t" -f '%e %M %U %S' "$@" >/dev/null 2>&1 || true
  tail -1 "$t"
  rm -f "$t"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A secs rss cpu mins maxs
for tool in "${tools[@]}"; do
  s=(); m=(); c=()
  n=$runs
  # Kyverno takes minutes a run on a loaded machine: KYVERNO_RUNS may ask for fewer.
  [[ $tool == kyverno ]] && n=${KYVERNO_RUNS:-$runs}
  for _ in $(seq "$n"); do
    case $tool in
      onus) r=$(measure "$onus" check -f "$dir" -o json) ;;
      kube-score) r=$(measure "$kube_score" score -o ci "${list[@]}") ;;
      kyverno) r=$(measure "$kyverno" apply "$kyverno_policy" --resource "$flat") ;;
    esac
    read -r e k u sy <<<"$r"
    s+=("$e"); m+=("$k"); c+=("$(awk -v u="$u" -v s="$sy" 'BEGIN {print u + s}')")
  done
  mins[$tool]=$(printf '%s\n' "${s[@]}" | sort -n | head -1)
  maxs[$tool]=$(printf '%s\n' "${s[@]}" | sort -n | tail -1)
  secs[$tool]=$(printf '%s\n' "${s[@]}" | median)
  rss[$tool]=$(printf '%s\n' "${m[@]}" | median)
  cpu[$tool]=$(printf '%s\n' "${c[@]}" | median)
  echo "$tool: runs ${s[*]} s; median ${secs[$tool]} s wall, ${cpu[$tool]} s CPU, peak RSS ${rss[$tool]} KiB" >&2
done
rate() { awk -v n="$objects" -v s="$1" 'BEGIN {printf "%.0f", n / s}'; }
echo "| tool | objects | wall min / median / max of $runs (Kyverno: ${KYVERNO_RUNS:-$runs}) | objects/s (median wall) | CPU (user+sys, median) | objects/CPU-s | peak RSS (median) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for tool in "${tools[@]}"; do
  echo "| $tool | $objects | ${mins[$tool]} / ${secs[$tool]} / ${maxs[$tool]} s | $(rate "${secs[$tool]}") | ${cpu[$tool]} s | $(rate "${cpu[$tool]}") | $(( ${rss[$tool]} / 1024 )) MiB |"
done
echo
for tool in "${tools[@]}"; do
  [[ $tool == onus ]] && continue
  awk -v t="$tool" -v a="${secs[$tool]}" -v b="${secs[onus]}" -v ca="${cpu[$tool]}" -v cb="${cpu[onus]}" \
    'BEGIN {printf "onus check vs %s: %.1fx by wall time, %.1fx by CPU time\n", t, a / b, ca / cb}'
done

# The Pod Security verdicts: Deployments failing restricted by Kyverno's podSecurity subrule
# (its policy report) and by onus check's Pod Security controls (WKL-02..09).
if [[ " ${tools[*]} " == *" kyverno "* && ${VERDICTS:-1} == 1 ]]; then
  work=$(mktemp -d)
  "$onus" check -f "$dir" -o json >"$work/onus.json" || true
  "$kyverno" apply "$kyverno_policy" --resource "$flat" --policy-report --output-format json \
    >"$work/kyverno.out" 2>"$work/kyverno.err" || true
  python3 bench/pss-verdicts.py "$work/onus.json" "$work/kyverno.out"
  rm -rf "$work"
fi
