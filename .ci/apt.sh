#!/usr/bin/env bash
# bash .ci/apt.sh "WHAT IS MISSING WITHOUT THEM" PACKAGE...: install Debian packages for optional tests.
# Never fails the CI run: when it cannot install (not root and no sudo, apt-get failing), it prints why and what
# is skipped, and exits 0.
set -u
skipped=$1
shift
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "not installed ($*): not root and no sudo; $skipped"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq || ! $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null; then
    echo "not installed ($*): apt-get failed; $skipped"
    exit 0
fi
echo "installed: $*"
exit 0
