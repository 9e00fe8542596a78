#!/usr/bin/env bash
# Install, upgrade or uninstall rackwatch on a rack's Raspberry Pi (Raspberry Pi OS Bookworm or Trixie).
#
#   sudo bash install.sh install --wheel rackwatch-VERSION-py3-none-any.whl [--model FILE]
#   sudo bash install.sh uninstall [--purge]
#
# "install" installs, or upgrades to, the wheel's version; run it again and nothing changes. Each release gets
# its own folder and venv, side by side, and a symlink names the current one:
#
#   /opt/rackwatch/releases/VERSION/venv      venv with the OS's packages visible (picamera2, lgpio, NumPy)
#   /opt/rackwatch/current -> releases/VERSION  switched atomically (a new symlink renamed over the old)
#   /opt/rackwatch/models/MODEL.tflite        the pose model, verified against the manifest, shared
#   /etc/systemd/system/rackwatch.service     and rackwatch-dashboard.service (installed, not enabled)
#   /etc/rackwatch/rackwatch.toml             the rack's settings (640, group rackwatch); kept on upgrade
#   /etc/rackwatch/environment                RACKWATCH_MQTT_PASSWORD=... (600); kept on upgrade
#
# After switching to a new release, `rackwatch doctor` is the gate: when it finds a problem the previous release
# is switched back and started again, and install.sh exits 1.
#
# Options:
#   --wheel FILE           the rackwatch wheel to install (install)
#   --model FILE           the model file to install (default: downloaded from the manifest's URL)
#   --model-manifest FILE  models/manifest.json (default: beside this script, or ../models/ in a checkout)
#   --config FILE          install this as /etc/rackwatch/rackwatch.toml (default: keep the one there)
#   --root DIR             install into DIR instead of / (tests, image builds). Then, as on any machine that
#                          is not a Raspberry Pi, the steps that need the Pi's own archive or a running systemd
#                          (apt packages, the rackwatch user, starting and stopping the service) are skipped,
#                          each with a line saying so.
#   --os bookworm|trixie   the OS release (default: VERSION_CODENAME of ROOT/etc/os-release)
#   --purge                (uninstall) also remove /etc/rackwatch, /var/lib/rackwatch and the rackwatch user
# Environment:
#   RACKWATCH_DOCTOR       the gate command, instead of the new release's `rackwatch doctor ...` (tests)
#   RACKWATCH_PIP_ARGS     extra pip arguments, e.g. "--no-index --find-links DIR" for a Pi without internet
#   PYTHON                 the Python to build venvs with off a Pi (default python3; on a Pi /usr/bin/python3)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ACTION=""
ROOT=/
WHEEL=""
MODEL=""
MANIFEST=""
CONFIG=""
OS=""
PURGE=no

say() { echo "install.sh: $*"; }
skip() { echo "install.sh: skipped: $*"; }
die() { echo "install.sh: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        install|uninstall) ACTION=$1 ;;
        --wheel) WHEEL=${2:?--wheel needs a file}; shift ;;
        --model) MODEL=${2:?--model needs a file}; shift ;;
        --model-manifest) MANIFEST=${2:?--model-manifest needs a file}; shift ;;
        --config) CONFIG=${2:?--config needs a file}; shift ;;
        --root) ROOT=${2:?--root needs a folder}; shift ;;
        --os) OS=${2:?--os needs bookworm or trixie}; shift ;;
        --purge) PURGE=yes ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1'. Run install.sh --help." ;;
    esac
    shift
done
[ -n "$ACTION" ] || die "say what to do: install.sh install --wheel FILE, or install.sh uninstall. See --help."

ROOT=${ROOT%/}
OPT="$ROOT/opt/rackwatch"
ETC="$ROOT/etc/rackwatch"
UNITS="$ROOT/etc/systemd/system"

# A Raspberry Pi being installed for real, or anything else (another machine, or a folder for --root)?
ON_PI=no
if [ -z "$ROOT" ] && grep -qs "Raspberry Pi" /proc/device-tree/model; then
    ON_PI=yes
fi
[ "$ON_PI" = yes ] || say "not installing onto a running Raspberry Pi: steps that need its archive or systemd are skipped"
[ "$ON_PI" = yes ] || [ -n "$ROOT" ] || die "this is not a Raspberry Pi: give --root DIR to install into a folder."

systemctl_on_pi() {
    if [ "$ON_PI" = yes ]; then systemctl "$@"; else skip "systemctl $*"; fi
}

# -- install --------------------------------------------------------------------------------------------------------

os_release() {
    if [ -z "$OS" ]; then
        # shellcheck disable=SC1091  # the file is the target's, not ours
        OS=$( . "$ROOT/etc/os-release" 2>/dev/null && echo "${VERSION_CODENAME:-}" ) || true
    fi
    case "$OS" in
        bookworm|trixie) ;;
        "") die "cannot tell the OS release ($ROOT/etc/os-release has no VERSION_CODENAME): give --os bookworm or --os trixie." ;;
        *) die "Raspberry Pi OS $OS is not supported: rackwatch installs on bookworm and trixie." ;;
    esac
    [ -f "$HERE/constraints/$OS.txt" ] || die "$HERE/constraints/$OS.txt is missing: use the install.sh of a complete checkout or seed."
}

os_packages() {
    local wanted=(python3-picamera2 python3-lgpio python3-gpiozero python3-numpy python3-venv) missing=() pkg
    if [ "$ON_PI" != yes ]; then
        skip "apt-get install ${wanted[*]} (they come from the Raspberry Pi archive)"
        return
    fi
    for pkg in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "OS packages already installed"
        return
    fi
    say "installing OS packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

service_user() {
    if [ "$ON_PI" != yes ]; then
        skip "useradd rackwatch (groups video, gpio)"
        return
    fi
    if id rackwatch >/dev/null 2>&1; then
        usermod --append --groups video,gpio rackwatch
    else
        say "creating the system user rackwatch (groups video, gpio)"
        useradd --system --user-group --groups video,gpio --home-dir /var/lib/rackwatch --no-create-home \
            --shell /usr/sbin/nologin rackwatch
    fi
}

release_version() {
    [ -f "$WHEEL" ] || die "give the wheel to install: --wheel rackwatch-VERSION-py3-none-any.whl"
    local name
    name=$(basename "$WHEEL")
    VERSION=${name#rackwatch-}
    VERSION=${VERSION%%-*}
    if [ -z "$VERSION" ] || [ "$name" = "$VERSION" ]; then
        die "$WHEEL is not a rackwatch wheel (rackwatch-VERSION-...whl)."
    fi
}

install_release() {
    local release="$OPT/releases/$VERSION" python
    if [ -f "$release/.complete" ]; then
        say "release $VERSION is already installed"
        return
    fi
    rm -rf "$release"
    mkdir -p "$release"
    python=${PYTHON:-python3}
    [ "$ON_PI" = yes ] && python=/usr/bin/python3
    say "installing release $VERSION into $release (venv with the OS's packages, constraints for $OS)"
    "$python" -m venv --system-site-packages "$release/venv"
    # shellcheck disable=SC2086  # RACKWATCH_PIP_ARGS is a list of words on purpose
    "$release/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --constraint "$HERE/constraints/$OS.txt" ${RACKWATCH_PIP_ARGS:-} "$WHEEL"
    cp "$WHEEL" "$release/"
    touch "$release/.complete"   # last: a half-built release is rebuilt by the next run
}

manifest_value() {   # manifest_value KEY: the field of the default model's manifest entry
    python3 -c 'import json, sys; entry = next(iter(json.load(open(sys.argv[1])).values())); print(entry[sys.argv[2]])' \
        "$MANIFEST" "$1"
}

install_model() {
    if [ -z "$MANIFEST" ]; then
        for MANIFEST in "$HERE/manifest.json" "$HERE/../models/manifest.json"; do
            [ -f "$MANIFEST" ] && break
        done
    fi
    [ -f "$MANIFEST" ] || die "the model manifest is missing: give --model-manifest models/manifest.json."
    local file sha url target tmp
    file=$(manifest_value file)
    sha=$(manifest_value sha256)
    url=$(manifest_value url)
    target="$OPT/models/$file"
    if [ -f "$target" ] && echo "$sha  $target" | sha256sum --check --status; then
        say "model $file already installed and verified"
        return
    fi
    mkdir -p "$OPT/models"
    tmp=$(mktemp "$OPT/models/.$file.XXXXXX")
    if [ -n "$MODEL" ]; then
        cp "$MODEL" "$tmp"
    else
        say "downloading the model from $url"
        curl --fail --silent --show-error --location --retry 3 --output "$tmp" "$url" \
            || { rm -f "$tmp"; die "could not download the model; copy it over and give --model FILE."; }
    fi
    if ! echo "$sha  $tmp" | sha256sum --check --status; then
        rm -f "$tmp"
        die "the model file has the wrong checksum (not $file of the manifest); it was not installed."
    fi
    chmod 644 "$tmp"
    mv -f "$tmp" "$target"
    say "model $file installed and verified"
}

install_config() {
    mkdir -p "$ETC"
    if [ -n "$CONFIG" ]; then
        if ! cmp -s "$CONFIG" "$ETC/rackwatch.toml"; then
            install -m 640 "$CONFIG" "$ETC/rackwatch.toml"
            say "config installed: $ETC/rackwatch.toml"
        fi
    elif [ ! -f "$ETC/rackwatch.toml" ]; then
        if [ -f "$HERE/rackwatch.example.toml" ]; then
            install -m 640 "$HERE/rackwatch.example.toml" "$ETC/rackwatch.toml"
            say "example config installed: set the rack id and broker in $ETC/rackwatch.toml"
        else
            say "no $ETC/rackwatch.toml yet: write one (see rackwatch.example.toml)"
        fi
    fi
    if [ "$ON_PI" = yes ]; then
        [ -f "$ETC/rackwatch.toml" ] && chgrp rackwatch "$ETC/rackwatch.toml" && chmod 640 "$ETC/rackwatch.toml"
        [ -f "$ETC/environment" ] && chown root:root "$ETC/environment" && chmod 600 "$ETC/environment"
    fi
    return 0
}

install_units() {
    local source_dir unit changed=no
    for source_dir in "$HERE/systemd" "$HERE/../systemd"; do
        [ -f "$source_dir/rackwatch.service" ] && break
    done
    [ -f "$source_dir/rackwatch.service" ] || die "the systemd units are missing beside install.sh."
    mkdir -p "$UNITS"
    for unit in "$source_dir"/*.service; do
        if ! cmp -s "$unit" "$UNITS/$(basename "$unit")"; then
            install -m 644 "$unit" "$UNITS/"
            say "unit installed: $(basename "$unit")"
            changed=yes
        fi
    done
    [ "$changed" = no ] || systemctl_on_pi daemon-reload
    if [ -L "$UNITS/multi-user.target.wants/rackwatch.service" ]; then
        return
    fi
    if [ "$ON_PI" = yes ]; then
        systemctl enable rackwatch.service
    elif command -v systemctl >/dev/null 2>&1; then
        systemctl --root="$ROOT" --quiet enable rackwatch.service   # works on a folder, without a running systemd
    else
        mkdir -p "$UNITS/multi-user.target.wants"
        ln -s /etc/systemd/system/rackwatch.service "$UNITS/multi-user.target.wants/rackwatch.service"
    fi
    say "rackwatch.service enabled (starts at boot)"
}

switch_to() {   # switch_to releases/VERSION: atomically, by renaming a new symlink over the old one
    ln -sfn "$1" "$OPT/.current.new"
    mv -T -f "$OPT/.current.new" "$OPT/current"
}

doctor_gate() {
    local config="$ETC/rackwatch.toml"
    if [ -n "${RACKWATCH_DOCTOR:-}" ]; then
        # shellcheck disable=SC2086  # a command line given by the caller
        RACKWATCH_MODEL="$OPT/models/$(manifest_value file)" ${RACKWATCH_DOCTOR}
        return
    fi
    # Not the aim (nobody stands at the rack during an upgrade), the clock or the heat: those are not the
    # release's doing. The service is stopped, so the camera and the pins are free for the doctor.
    RACKWATCH_MODEL="$OPT/models/$(manifest_value file)" "$OPT/current/venv/bin/rackwatch" --config "$config" \
        doctor --check version --check model --check camera --check gpio --check broker --check disk
}

switch_release() {
    local target="releases/$VERSION" previous=""
    [ -L "$OPT/current" ] && previous=$(readlink "$OPT/current")
    if [ "$previous" = "$target" ]; then
        say "release $VERSION is already the current one"
        return
    fi
    systemctl_on_pi stop rackwatch.service
    switch_to "$target"
    say "switched to release $VERSION${previous:+ (from ${previous#releases/})}; checking it with rackwatch doctor"
    if doctor_gate; then
        say "rackwatch doctor: release $VERSION is healthy"
        prune_releases "$target" "$previous"
    elif [ -n "$previous" ]; then
        switch_to "$previous"
        systemctl_on_pi start rackwatch.service
        echo "install.sh: rackwatch doctor found a problem with release $VERSION (above): rolled back to ${previous#releases/}." >&2
        exit 1
    else
        say "rackwatch doctor found problems (above); this is the first release, so it stays: fix them and run rackwatch doctor again"
    fi
    systemctl_on_pi start rackwatch.service
}

prune_releases() {   # keep the current release and the one before it (for a quick roll-back by hand)
    local release name
    for release in "$OPT"/releases/*; do
        name="releases/$(basename "$release")"
        if [ "$name" != "$1" ] && [ "$name" != "${2:-}" ]; then
            rm -rf "$release"
            say "removed old release $(basename "$release")"
        fi
    done
}

do_install() {
    os_release
    release_version
    os_packages
    service_user
    install_model
    install_release
    install_config
    install_units
    switch_release
    say "done: rackwatch $VERSION on Raspberry Pi OS $OS"
}

# -- uninstall ------------------------------------------------------------------------------------------------------

do_uninstall() {
    local unit
    if [ "$ON_PI" = yes ]; then
        systemctl disable --now rackwatch.service rackwatch-dashboard.service 2>/dev/null || true
    elif [ -L "$UNITS/multi-user.target.wants/rackwatch.service" ]; then
        rm -f "$UNITS/multi-user.target.wants/rackwatch.service"
        say "rackwatch.service disabled"
    fi
    for unit in rackwatch.service rackwatch-dashboard.service; do
        if [ -f "$UNITS/$unit" ]; then
            rm -f "$UNITS/$unit"
            say "unit removed: $unit"
        fi
    done
    systemctl_on_pi daemon-reload
    if [ -d "$OPT" ]; then
        rm -rf "$OPT"
        say "removed $OPT"
    fi
    if [ "$PURGE" = yes ]; then
        rm -rf "$ETC" "$ROOT/var/lib/rackwatch"
        say "removed the settings and state ($ETC, $ROOT/var/lib/rackwatch)"
        if [ "$ON_PI" = yes ] && id rackwatch >/dev/null 2>&1; then
            userdel rackwatch
        fi
    else
        say "kept $ETC and $ROOT/var/lib/rackwatch (the settings and the outbox): --purge removes them too"
    fi
}

case "$ACTION" in
    install) do_install ;;
    uninstall) do_uninstall ;;
esac
