#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the dashboard browser test.
# Never fails the CI run: without Chromium that test is skipped.
set -u
if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(chromium --version 2>/dev/null)"
    exit 0
fi
bash "$(dirname "$0")/apt.sh" "the browser test will be skipped" chromium
