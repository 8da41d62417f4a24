#!/usr/bin/env bash
# Install what tests/test_page_browser.py needs from Debian: the chromium browser (Playwright, a
# PyPI test dependency, drives it through executable_path; `playwright install` cannot download
# browsers here) and a font, so pages render text. Idempotent and quiet: does nothing when both
# are there. Runs as root, or through sudo when it is available.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
have_font() { fc-list 2>/dev/null | grep -qi dejavu; }

if [ -x "$CHROMIUM" ] && have_font; then
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install_browser_deps.sh: needs root (or sudo) to apt-get install chromium" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
"$CHROMIUM" --version
