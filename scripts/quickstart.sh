#!/usr/bin/env bash
# The README's first command: build belay and run its main job on an example.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}"

say "building belay (release)"
cargo build --release --locked -p belay

BELAY="$ROOT/target/release/belay"
EXAMPLE="SELECT id, plate FROM vehicles WHERE status = 'available'; DELETE FROM payments WHERE 1 = 1"
say "belay sql classify --sql \"$EXAMPLE\""
"$BELAY" sql classify --sql "$EXAMPLE"
DEMO="$(mktemp -d "${TMPDIR:-/tmp}/belay-quickstart.XXXXXX")"
say "belay init $DEMO, a human, an agent, and what policy says about its statements"
"$BELAY" init "$DEMO" >/dev/null
export BELAY_CONFIG="$DEMO/belay.toml"
"$BELAY" human add alice >/dev/null
"$BELAY" agent add ci-bot --owner alice --grant staging=destructive --grant production=read >/dev/null
for env in staging production; do
    "$BELAY" policy explain --agent ci-bot --env "$env" --sql "DROP TABLE payments"
done
"$BELAY" audit verify
cat >&2 <<MSG

belay is built at $BELAY; the demo configuration is $BELAY_CONFIG. Try:
  export BELAY_CONFIG=$BELAY_CONFIG
  $BELAY policy explain --agent ci-bot --env production --sql 'UPDATE vehicles SET status = 1'
  $BELAY audit tail
  $BELAY sql classify --sql 'WITH gone AS (DELETE FROM rentals RETURNING *) SELECT 1'
MSG
