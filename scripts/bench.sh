#!/usr/bin/env bash
# The gateway benchmark in one command: PostgreSQL directly, through PgBouncer and through
# belay, side by side with pgbench on loopback. Installs PgBouncer and PostgreSQL when they are
# missing, builds belay (release), and runs scripts/bench.py with the arguments given
# (`--help` lists them; `--seconds 3 --repetitions 1` is a quick look). The report is printed
# and written to target/bench/report.md.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}"
ensure_commands "${RUN_COMMANDS[@]}" pgbench:postgresql pgbouncer:pgbouncer python3:python3 pip:python3-pip
add_postgres_to_path
ensure_psycopg

say "building belay (release)"
cargo build --release --locked -p belay

exec python3 "$ROOT/scripts/bench.py" "$@"
