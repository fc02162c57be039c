#!/usr/bin/env bash
# Install the Debian packages the benchmark suite's datasets are built from (benchmarks/datasets): the wallpaper
# photographs and the font families. Never fails the CI run: without them those dataset tests are skipped.
set -u
PACKAGES="mate-backgrounds lomiri-wallpapers plasma-workspace-wallpapers fonts-urw-base35 fonts-freefont-ttf
fonts-liberation fonts-croscore fonts-dejavu-core fonts-dejavu-extra fonts-hack fonts-adf-accanthis fonts-cabin
fonts-crosextra-caladea fonts-cantarell fonts-crosextra-carlito fonts-comic-neue fonts-ebgaramond fonts-go
fonts-inconsolata fonts-lato fonts-noto-mono fonts-open-sans fonts-oxygen fonts-paratype fonts-quicksand"

bash "$(dirname "$0")/apt.sh" "those dataset tests will be skipped" $PACKAGES
