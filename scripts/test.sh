#!/usr/bin/env bash
# The test command: set up what the tests need, then run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec python3 -m pytest "$@"
