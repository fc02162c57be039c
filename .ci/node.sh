#!/usr/bin/env bash
# Install npm (and Node.js) when absent: utils/dashboard/assets.py fetches the visdom
# dashboard's JS/CSS files with `npm pack`. Debian images often ship without it.
set -u

if command -v npm >/dev/null 2>&1; then
    echo "npm already installed: $(npm --version) (node $(node --version 2>/dev/null))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
export DEBIAN_FRONTEND=noninteractive
if $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null; then
    echo "installed npm $(npm --version)"
    exit 0
fi
# without npm the dashboard cannot fetch its files and its tests fail; say so here
echo "npm not installed: apt-get install npm failed (the visdom dashboard tests need npm or a filled cache)"
exit 1
