#!/usr/bin/env bash
# Supply-chain checks, offline: cargo-deny (licenses, duplicate crates, sources, advisories; policy in
# deny.toml) and cargo-audit (advisories), both against the RustSec snapshot in ../shared/advisory-db.
# Installs cargo-deny and cargo-audit when missing (about 10 minutes each).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

db=$(cd "$repo/.." && pwd)/shared/advisory-db
if [ ! -d "$db/crates" ]; then
    echo "error: no advisory database at $db (the RustSec snapshot in ../shared)" >&2
    exit 1
fi

# The versions this setup was tested with (the cargo-deny database layout below is its own).
tools=()
command -v cargo-deny >/dev/null || tools+=(cargo-deny@0.20.2)
command -v cargo-audit >/dev/null || tools+=(cargo-audit@0.22.2)
if [ ${#tools[@]} -gt 0 ]; then
    echo "==> cargo install --locked ${tools[*]}"
    cargo install --locked "${tools[@]}"
fi

# cargo-deny reads a database at <db-path>/advisory-db-<hash of its URL> (deny.toml: db-path, db-urls)
# and wants a git checkout there, dated by .git/FETCH_HEAD. The snapshot is plain read-only files, so
# present it that way, dated with the snapshot's own date (SNAPSHOT.txt) for the staleness check.
snapshot_date=$(grep -oE -m 1 '[0-9]{4}-[0-9]{2}-[0-9]{2}' "$db/SNAPSHOT.txt") ||
    { echo "error: no snapshot date (YYYY-MM-DD) in $db/SNAPSHOT.txt" >&2; exit 1; }
deny_db=target/advisory-dbs/advisory-db-3157b0e258782691
mkdir -p "$deny_db/.git"
ln -sfn "$db/crates" "$deny_db/crates"
touch -d "$snapshot_date" "$deny_db/.git/FETCH_HEAD"

# cargo-deny --offline needs every package in Cargo.lock (all platforms) in cargo's cache, and never
# fetches the advisory database; crates.io itself is reachable, so download the packages first.
cargo fetch --quiet
cargo deny --offline check licenses bans sources advisories
cargo audit --db "$db" --no-fetch --stale
