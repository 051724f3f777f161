#!/usr/bin/env bash
# The write path's two ways, side by side in one run: a COMMIT that carries its decisions
# into the upstream's ledger (the default) against one that waits for belay's audit log
# (`audit.upstream_ledger = false`), both through belay to one PostgreSQL server that syncs
# its commits, alternating with the server directly. Prints, per round and protocol, each
# target's TPS and its COMMIT's mean latency (pgbench -r).
#
#   scripts/bench-ledger.sh [SECONDS] [CLIENTS] [ROUNDS]     (defaults: 4 1 3)
#
# Needs what scripts/bench.sh installs (PostgreSQL 15 server binaries, pgbench) and builds
# belay (release).
set -euo pipefail
seconds=${1:-4}; clients=${2:-1}; rounds=${3:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
export PATH=/usr/lib/postgresql/15/bin:$PATH
cargo build --release --locked -p belay --manifest-path "$root/Cargo.toml" >&2
belay=$root/target/release/belay
dir=$(mktemp -d /tmp/belay-ledger-XXXXXX); chmod 755 "$dir"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    sleep 1
    as_pg pg_ctl -D "$dir/pg" stop -m fast >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo secretpw > "$dir/pwfile"
[ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
as_pg initdb -D "$dir/pg" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 \
    --locale=C --no-sync --pwfile="$dir/pwfile" >/dev/null
# fsync, synchronous_commit and full_page_writes are on: initdb's defaults.
as_pg pg_ctl -D "$dir/pg" -l "$dir/pg.log" -w -o "-c listen_addresses=127.0.0.1 -c port=$port \
    -c unix_socket_directories=$dir -c max_connections=300 -c shared_buffers=256MB" start >/dev/null
"$belay" quickstart --port 0 --dir "$dir/qs" --upstream "postgres://postgres:secretpw@127.0.0.1:$port" \
    --max-connections 100 >"$dir/ledger.log" 2>&1 &
pids+=($!)
while [ ! -f "$dir/qs/quickstart.json" ]; do sleep 0.3; done; sleep 0.5
ledger=$(python3 -c "import json;print(json.load(open('$dir/qs/quickstart.json'))['staging_url'])")
direct="postgres://belay_staging:$(cat "$dir/qs/secrets/staging-password")@127.0.0.1:$port/staging"
# The second gateway: a copy of the same setup, waiting for its audit log before a COMMIT.
cp -r "$dir/qs" "$dir/qs2"
off_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s/^postgres = \"127.0.0.1:[0-9]*\"/postgres = \"127.0.0.1:$off_port\"/; s/^\[audit\]/[audit]\nupstream_ledger = false/" "$dir/qs2/belay.toml"
"$belay" --config "$dir/qs2/belay.toml" serve >"$dir/off.log" 2>&1 &
pids+=($!)
sleep 3
off=$(echo "$ledger" | sed "s/:[0-9]*\/staging/:$off_port\/staging/")
pgbench -i -q -s 10 "$direct" >/dev/null 2>&1
echo "| round | protocol | target | TPS | COMMIT ms |"
echo "|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
    for mode in simple prepared; do
        for target in direct ledger off; do
            url=${!target}
            out=$(pgbench -n -T "$seconds" -c "$clients" -j "$clients" -M "$mode" -r "$url" 2>/dev/null)
            tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3}')
            commit=$(echo "$out" | awk '/ END;$/ {print $1}')
            echo "| $r | $mode | $target | $tps | $commit |"
        done
    done
done
