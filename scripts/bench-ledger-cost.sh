#!/usr/bin/env bash
# What a ledger row costs the database by itself, without belay: pgbench's TPC-B-like script
# against a PostgreSQL that syncs its commits, plain, and with an INSERT shaped like belay's
# ledger row sent in the same Query as the END (as belay sends it), once with a row of four
# write events (about 3 KB, what TPC-B-like's four writes make) and once with a row of 0.9 KB.
# Prints, per round and variant, the TPS and the server's CPU per transaction (the
# postmaster's, its reaped backends' and its live children's, from /proc).
#
#   scripts/bench-ledger-cost.sh [SECONDS] [CLIENTS] [ROUNDS]     (defaults: 5 8 2)
#
# Needs PostgreSQL 15 server binaries and pgbench (scripts/bench.sh installs them).
set -euo pipefail
seconds=${1:-5}; clients=${2:-8}; rounds=${3:-2}
export PATH=/usr/lib/postgresql/15/bin:$PATH
dir=$(mktemp -d /tmp/belay-ledger-cost-XXXXXX); chmod 755 "$dir"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    as_pg pg_ctl -D "$dir/pg" stop -m fast >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
[ "$(id -u)" = 0 ] && chown -R postgres: "$dir"
as_pg initdb -D "$dir/pg" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
# fsync, synchronous_commit and full_page_writes are on: initdb's defaults.
as_pg pg_ctl -D "$dir/pg" -l "$dir/pg.log" -w -o "-c listen_addresses=127.0.0.1 -c port=$port \
    -c unix_socket_directories=$dir -c shared_buffers=256MB" start >/dev/null
url="postgres://postgres@127.0.0.1:$port/postgres"
pgbench -i -q -s 10 "$url" >/dev/null 2>&1
# The ledger's table as belay makes it (ledger.rs).
psql -q "$url" -c "CREATE TABLE decisions (key text PRIMARY KEY, store text NOT NULL, \
    event text NOT NULL, written timestamptz NOT NULL DEFAULT now()) WITH (toast_tuple_target = 8160)"
python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
event = json.dumps({"time_us": 1796674505164029, "actor": "agent:demo-agent", "kind": "statement",
    "environment": "staging", "class": "write", "verdict": "allow",
    "reasons": ["the agent holds a grant for this environment"], "policies": ["granted-work"],
    "fingerprint": "12ed41acecb2720b4ad15e4a5bc0deb5af6cee8aa40000ced5336cbcff31decb",
    "outcome": "completed", "detail": {"peer": "127.0.0.1 48414", "phase": "execute",
    "statements": [{"kind": "UPDATE", "class": "write", "flags": [], "relations": [
        {"name": "pgbench_accounts", "object": "relation", "access": "write"}]}],
    "sql": "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "ledger": "83174d961385c3cc-1", "outcomes": [{"statement": 0, "tag": "UPDATE 1", "rows": 1,
    "sqlstate": None}]}}, separators=(", ", ": "))  # ": " keeps pgbench from reading :names
rows = {"3kb": "[" + ",".join([event] * 4) + "]", "0.9kb": "[" + event[:880] + "]"}
tpcb = """\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
"""
open(f"{d}/plain.sql", "w").write(tpcb + "END;\n")
for name, row in rows.items():
    insert = ("INSERT INTO decisions (key, store, event) VALUES "
              f"(gen_random_uuid()::text, 'store', '{row}')")
    open(f"{d}/ledger-{name}.sql", "w").write(tpcb + insert + " \\; END;\n")
PY
server_cpu() {
    python3 - "$dir/pg" <<'PY'
import os, sys
from pathlib import Path
tick = os.sysconf("SC_CLK_TCK")
pm = int((Path(sys.argv[1]) / "postmaster.pid").read_text().split()[0])
total = 0
for stat in Path("/proc").glob("[0-9]*/stat"):
    try:
        f = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if int(stat.parent.name) == pm:
        total += sum(int(x) for x in f[11:15])
    elif int(f[1]) == pm:
        total += int(f[11]) + int(f[12])
print(total / tick)
PY
}
echo "| round | variant | TPS | server CPU µs per transaction |"
echo "|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
    for variant in plain ledger-3kb ledger-0.9kb; do
        before=$(server_cpu)
        out=$(pgbench -n -s 10 -T "$seconds" -c "$clients" -j "$clients" -M simple \
            -f "$dir/$variant.sql" "$url" 2>&1)
        sleep 0.3
        after=$(server_cpu)
        done_tx=$(echo "$out" | awk '/actually processed:/ {print $NF}' | cut -d/ -f1)
        tps=$(echo "$out" | awk '/^tps/ {printf "%.0f", $3}')
        us=$(python3 -c "print(round(($after - $before) * 1e6 / max(1, $done_tx)))")
        echo "| $r | $variant | $tps | $us |"
        psql -q "$url" -c "TRUNCATE decisions"
    done
done
