#!/usr/bin/env bash
# Headless Chromium for tests/tools/test_drift.py, which opens the drift report in a real browser and takes a
# screenshot. Idempotent: nothing happens when a Chromium is already on PATH (or $CHROMIUM names one). Installs
# Debian's `chromium` package with apt-get (as root, or through sudo); elsewhere it says what to install and fails.
set -euo pipefail

if [[ -n "${CHROMIUM:-}" && -x "$(command -v "$CHROMIUM" || true)" ]]; then
    exit 0
fi
for name in chromium chromium-browser google-chrome; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: no apt-get here: install Chromium (or Chrome) and put it on PATH, or set CHROMIUM" >&2
    exit 1
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-chromium: need root or sudo to apt-get install chromium" >&2; exit 1; }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null
