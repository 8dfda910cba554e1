#!/usr/bin/env bash
# The README's picture of `onus report --format html`: the report of `onus check` over the
# example cluster's manifests (tests/fixtures/check/cluster), offline, rendered by headless
# Chromium (hack/install-browser.sh) into docs/report.png.
#   bash hack/report-screenshot.sh [ONUS_BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
onus=${1:-target/debug/onus}
chromium=${ONUS_CHROMIUM:-/usr/bin/chromium}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
onus=$(realpath "$onus")
repo=$PWD
# From the fixture directory, so the report names the files as a user's checkout would.
(cd tests/fixtures/check && "$onus" check -f cluster --policy policy.yaml -o json >"$work/check.json") ||
  [[ $? -eq 1 ]]
(cd "$work" && "$onus" report --from check.json --format html -o report.html)
"$chromium" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  "--host-resolver-rules=MAP * ~NOTFOUND" --user-data-dir="$work/profile" \
  --hide-scrollbars --window-size=1280,1100 --screenshot="$repo/docs/report.png" \
  "file://$work/report.html" 2>/dev/null
echo "docs/report.png written"
