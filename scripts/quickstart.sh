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
cat >&2 <<MSG

belay is built at $BELAY. Try your own statements:
  $BELAY sql classify --sql 'DROP TABLE rentals'
  echo 'WITH gone AS (DELETE FROM rentals RETURNING *) SELECT 1' | $BELAY sql classify --json
MSG
