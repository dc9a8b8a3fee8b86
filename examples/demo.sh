#!/usr/bin/env bash
# Demo: run hello_counter under checkpoint control, checkpoint it, kill it,
# restart it from the image and watch the counter continue.
# Uses its own coordinator on a free port in a temp dir; cleans up after itself.
# Binaries: $DMTCP_BIN_DIR, else target/release of this checkout.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${DMTCP_BIN_DIR:-${CARGO_TARGET_DIR:-$here/../target}/release}"
for b in dmtcp-coordinator dmtcp-run dmtcp-command dmtcp-restart; do
    [[ -x "$bin/$b" ]] || { echo "demo: $bin/$b not found (build first: cargo build --release)" >&2; exit 1; }
done
export PATH="$bin:$PATH"

work="$(mktemp -d /tmp/dmtcp-demo.XXXXXX)"
chmod 0755 "$work"
mkdir -p "$work/ckpt" "$work/tmp"
export DMTCP_TMPDIR="$work/tmp"
unset DMTCP_COORD_HOST DMTCP_COORD_PORT DMTCP_CHECKPOINT_DIR
port=""
run_pid=""
restart_pid=""

cleanup() {
    [[ -n "$port" ]] && dmtcp-command -p "$port" -q >/dev/null 2>&1 || true
    for p in $run_pid $restart_pid; do kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

last_count() { grep -o '[0-9]\+$' "$work/counter.log" | tail -n 1; }

echo "demo: building hello_counter"
gcc -O1 -g -o "$work/hello_counter" "$here/hello_counter.c"

echo "demo: starting a coordinator on a free port"
dmtcp-coordinator --daemon --port 0 --port-file "$work/port" --ckpt-dir "$work/ckpt"
for _ in $(seq 100); do [[ -s "$work/port" ]] && break; sleep 0.1; done
port="$(tr -d '[:space:]' < "$work/port")"
echo "demo: coordinator on port $port, images in $work/ckpt"

echo "demo: dmtcp-run -- hello_counter"
dmtcp-run --coord-port "$port" -- "$work/hello_counter" >>"$work/counter.log" 2>&1 &
run_pid=$!
sleep 3
cat "$work/counter.log"

echo "demo: dmtcp-command -bc (blocking checkpoint)"
dmtcp-command -p "$port" -bc
at_ckpt="$(last_count)"
echo "demo: checkpointed at count $at_ckpt"
sleep 1

echo "demo: dmtcp-command -k (kill the computation)"
dmtcp-command -p "$port" -k
wait "$run_pid" 2>/dev/null || true
run_pid=""
at_kill="$(last_count)"
lines_at_kill="$(wc -l < "$work/counter.log")"
echo "demo: killed at count $at_kill"

echo "demo: dmtcp-restart $(cd "$work/ckpt" && echo ckpt_hello_counter_*.dmtcp)"
dmtcp-restart --coord-port "$port" "$work"/ckpt/ckpt_hello_counter_*.dmtcp >>"$work/counter.log" 2>&1 &
restart_pid=$!
sleep 3
echo "demo: output after the restart:"
tail -n +"$((lines_at_kill + 1))" "$work/counter.log"
first_after="$(tail -n +"$((lines_at_kill + 1))" "$work/counter.log" | grep -o '[0-9]\+$' | head -n 1 || true)"
if [[ -z "$first_after" ]] || (( first_after <= 1 || first_after > at_kill + 1 )); then
    echo "demo: FAILED: expected the counter to continue from about $at_ckpt, got '${first_after}'" >&2
    exit 1
fi
echo "demo: restarted counter continued at $first_after (checkpoint at $at_ckpt, killed at $at_kill)"

dmtcp-command -p "$port" -q >/dev/null
port=""
wait "$restart_pid" 2>/dev/null || true
restart_pid=""
echo "demo: OK"
