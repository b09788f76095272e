#!/usr/bin/env bash
# Installs Debian's Chromium and ChromeDriver for the browser tests, once.
# The browser tests must run (never skip) in CI, so a failed install fails `make test`.
set -euo pipefail

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "chromium and chromium-driver are missing and this user cannot install them." >&2
        echo "Install them as root: apt-get install -y chromium chromium-driver" >&2
        exit 1
    fi
fi

echo "Installing Debian chromium and chromium-driver for the browser tests..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
chromium --version
chromedriver --version
