#!/usr/bin/env bash
# The README's first command: build belay and run its main job, `belay quickstart`: a scratch
# PostgreSQL with staging and production databases, a demo agent, and the gateway in front.
# Arguments are passed on (`--dir DIR`, `--port PORT`, `--upstream URL`); Ctrl-C stops it all.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}"
ensure_commands "${RUN_COMMANDS[@]}"

say "building belay (release)"
cargo build --release --locked -p belay

BELAY="$ROOT/target/release/belay"
say "belay quickstart $*"
# The scratch cluster lives under /tmp by default: PostgreSQL runs as its own user when this
# runs as root, and that user must be able to reach the directory.
if [[ " $* " != *" --dir "* ]]; then
    set -- --dir "${TMPDIR:-/tmp}/belay-quickstart" "$@"
fi
exec "$BELAY" quickstart "$@"
