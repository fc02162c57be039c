#!/usr/bin/env bash
# Install the Debian packages the benchmark suite's datasets are built from (benchmarks/datasets): the wallpaper
# photographs and the font families. Never fails the CI run: without them those dataset tests are skipped.
set -u
PACKAGES="mate-backgrounds lomiri-wallpapers plasma-workspace-wallpapers fonts-urw-base35 fonts-freefont-ttf
fonts-liberation fonts-croscore fonts-dejavu-core fonts-dejavu-extra fonts-hack fonts-adf-accanthis fonts-cabin
fonts-crosextra-caladea fonts-cantarell fonts-crosextra-carlito fonts-comic-neue fonts-ebgaramond fonts-go
fonts-inconsolata fonts-lato fonts-noto-mono fonts-open-sans fonts-oxygen fonts-paratype fonts-quicksand"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        echo "suite data packages not installed: not root and no sudo; those dataset tests will be skipped"
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq || ! $SUDO apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null; then
    echo "suite data packages not installed: apt-get failed; those dataset tests will be skipped"
    exit 0
fi
echo "installed the suite's photographs and fonts"
exit 0
