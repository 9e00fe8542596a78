#!/usr/bin/env bash
# Sets up a development or CI machine from nothing; safe to run again (it skips what is already there).
#   - Debian packages the tests need (a Mosquitto broker binary for the MQTT tests);
#   - a virtual environment in .venv with rackwatch installed in editable mode, with its test and dashboard extras;
#   - the pose model, verified against models/manifest.json: copied from ../shared/models when that folder
#     exists (build and CI machines have no internet access), downloaded otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
# The dashboard's browser tests drive Debian's chromium (Playwright never downloads a browser of its own).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "Installing Debian packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
    # The package starts a broker on 1883; the tests start their own on free ports and do not need it.
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,dashboard]"

if [ -d ../shared/models ]; then
    .venv/bin/rackwatch models fetch --from ../shared/models
else
    .venv/bin/rackwatch models fetch
fi
