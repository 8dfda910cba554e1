#!/usr/bin/env bash
# Headless Chromium from Debian's packages, for the test that renders `onus report --format
# html` in a real browser (tests/report.rs) and for the README's screenshot of it. A no-op when
# it is installed; set ONUS_CHROMIUM to use another Chromium binary.
set -euo pipefail
bin=${ONUS_CHROMIUM:-/usr/bin/chromium}
[[ -x $bin ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  echo "Chromium is missing: install Debian's chromium package (apt-get install chromium), or set ONUS_CHROMIUM" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
