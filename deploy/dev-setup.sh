#!/usr/bin/env bash
# Sets up a development or CI machine from nothing; safe to run again (it skips what is already there).
#   - Debian packages the tests need: Mosquitto (the broker and mosquitto_passwd, for the MQTT tests) and openssl
#     (throwaway TLS certificates); under CI=true the tests FAIL without them, they do not skip;
#   - for the deployment tests: systemd-analyze, shellcheck, cloud-init and netplan; chromium for the dashboard's
#     browser tests;
#   - a virtual environment in .venv with rackwatch installed in editable mode, with its test and dashboard extras;
#   - the pose model, verified against models/manifest.json: copied from ../shared/models when that folder
#     exists (build and CI machines have no internet access), downloaded otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# Found as the tests find them (tests/real_parts.py): PATH, then /usr/sbin.
{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } && command -v mosquitto_passwd >/dev/null 2>&1 \
    || need_apt+=(mosquitto)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# The deployment tests check units, scripts and first-boot seeds with the real tools (tests/deploy_tools.py).
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
command -v cloud-init >/dev/null 2>&1 || need_apt+=(cloud-init)
command -v netplan >/dev/null 2>&1 || [ -x /usr/sbin/netplan ] || need_apt+=(netplan.io)
# The dashboard's browser tests drive Debian's chromium (Playwright never downloads a browser of its own).
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# The dashboard's store tests run on a real PostgreSQL too (as postgres on 127.0.0.1:5432; $RACKWATCH_TEST_PG
# names another).
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "Installing Debian packages: ${need_apt[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
    # The package starts a broker on 1883; the tests start their own on free ports and do not need it.
fi
if [ -z "${RACKWATCH_TEST_PG:-}" ] && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "Starting PostgreSQL"
    for cluster in /etc/postgresql/*/main; do
        version=$(basename "$(dirname "$cluster")")
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
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
