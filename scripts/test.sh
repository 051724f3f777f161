#!/usr/bin/env bash
# The README's second command: every check and every test, exactly as CI runs them.
#   BELAY_FUZZ_SECONDS  length of the fuzz smoke run (default 30; 0 skips it outside CI)
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}"
ensure_commands "${TEST_COMMANDS[@]}"
add_postgres_to_path
ensure_client_libraries
# The other supported PostgreSQL versions' servers, for the built-in function test, which then
# fails unless it checks every one.
if ensure_server_versions; then
    export BELAY_PG_ALL_VERSIONS=1
fi

say "formatting (cargo fmt --check)"
cargo fmt --all --check

say "lints (cargo clippy -D warnings)"
cargo clippy --locked --workspace --all-targets -- -D warnings

say "generated parse-tree walker matches pg_query"
PG_QUERY_SRC="$(cargo metadata --locked --format-version 1 \
    | python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "pg_query"))')"
python3 crates/belay-sql/codegen/gen_children.py "$(dirname "$PG_QUERY_SRC")/src/protobuf.rs" --check

FUZZ_SECONDS="${BELAY_FUZZ_SECONDS:-30}"
if [ "${CI:-}" = "true" ] && [ "$FUZZ_SECONDS" = "0" ]; then
    die "CI must run the fuzz smoke test: BELAY_FUZZ_SECONDS=0 is not allowed when CI=true"
fi
if [ "$FUZZ_SECONDS" != "0" ]; then
    if ! cargo fuzz --version >/dev/null 2>&1; then
        say "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
        cargo install cargo-fuzz --locked --quiet
    fi
    say "fuzz smoke run: classifier, ${FUZZ_SECONDS}s"
    mkdir -p fuzz/corpus/classify
    # libFuzzer's sanitizer flags need nightly features; RUSTC_BOOTSTRAP lets the stable
    # toolchain accept them, so no second toolchain is needed.
    RUSTC_BOOTSTRAP=1 cargo fuzz run classify fuzz/corpus/classify fuzz/seeds \
        -- -max_total_time="$FUZZ_SECONDS" -max_len=4096 -print_final_stats=1 2>&1 | tail -n 40
fi

say "tests (cargo test --workspace --all-targets)"
cargo test --locked --workspace --all-targets

# The benchmark harness in one short pass, so that the one command behind
# docs/BENCHMARKS.md keeps working: the debug build that the tests just built, one-second
# runs at one client, 20 idle connections. It checks that the harness runs end to end and
# measures nothing worth reading.
say "benchmark harness smoke run (scripts/bench.py, figures not meaningful)"
cargo build --locked -p belay
python3 scripts/bench.py --belay target/debug/belay --scale 1 --seconds 1 --repetitions 1 \
    --clients 1 --scripts select-only,tpcb-like --modes prepared --idle 20 --idle-seconds 2 \
    --out target/bench/smoke.md >/dev/null
grep -q "| select-only | prepared | 1 |" target/bench/smoke.md \
    || die "the benchmark harness wrote no select-only line: see target/bench/smoke.md"
grep -q "KiB per connection" target/bench/smoke.md \
    || die "the benchmark harness measured no idle memory: see target/bench/smoke.md"
