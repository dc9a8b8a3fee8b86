#!/usr/bin/env bash
# Checkpoint/restart benchmark for dmtcp-rs. See docs/performance.md.
#   tests/bench/run.sh [--quick] [--large] [--reps N] [--sizes 64,256] [--bin DIR] [--dir DIR] [--keep]
# Binaries: --bin DIR, else $CARGO_TARGET_DIR/release, else target/release of this checkout.
# Writes tests/bench/results/latest.md, latest.json and ckpt_restart.png.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec python3 "$here/bench.py" "$@"
