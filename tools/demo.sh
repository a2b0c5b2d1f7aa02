#!/usr/bin/env bash
# The main job on the built-in default (filled in as the parts land).
set -euo pipefail
echo "demo: not assembled yet" >&2
exit 1
