#!/usr/bin/env bash
# Supply-chain checks, offline: cargo-deny (licenses, duplicate crates, sources, advisories; policy in
# deny.toml) and cargo-audit (advisories) on Cargo.lock, then cargo-audit on the built enclave binary
# (the crates its embedded .dep-v0 list names: what is measured, not what the workspace could build),
# all against the RustSec snapshot in ../shared/advisory-db.
# Installs cargo-deny and cargo-audit when missing (about 10 minutes each).
#
# The enclave binary: $NACRE_AUDIT_ENCLAVE, else where scripts/build-enclave.sh leaves it (the
# demo builds it). When it is absent the binary audit is skipped with a message, unless
# NACRE_AUDIT_ENCLAVE_REQUIRED=1 (scripts/test.sh sets it, since its demo step builds the enclave):
# then it fails.
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

# One list of excused advisories for both tools: deny.toml's [advisories] ignore ids (each with
# its reason there), passed to cargo-audit, which has no reasons of its own.
ignores=()
# (Comments are dropped first, so that an id a comment mentions is not taken for an excuse.)
for id in $(sed -n '/^\[advisories\]/,/^\[/p' deny.toml | sed 's/#.*//' | sed -n '/^ignore *= *\[/,/\]/p' |
    grep -oE 'RUSTSEC-[0-9]{4}-[0-9]{4}' || true); do
    ignores+=(--ignore "$id")
done
# As deny.toml: vulnerabilities, unmaintained and unsound crates all fail.
audit=(cargo audit --db "$db" --no-fetch --stale --deny unmaintained --deny unsound "${ignores[@]}")
"${audit[@]}"

enclave=${NACRE_AUDIT_ENCLAVE:-${NACRE_ENCLAVE_TARGET_DIR:-$repo/target/enclave}/x86_64-unknown-linux-gnu/release/nacre-enclave-guest}
if [ ! -f "$enclave" ]; then
    if [ "${NACRE_AUDIT_ENCLAVE_REQUIRED:-}" = 1 ]; then
        echo "error: no enclave binary at $enclave to audit, although the demo built one (NACRE_AUDIT_ENCLAVE_REQUIRED=1)" >&2
        exit 1
    fi
    echo "==> skipped: cargo audit bin (no enclave binary at $enclave: scripts/build-enclave.sh, or the demo, builds it)"
    exit 0
fi
# cargo-audit falls back to guessing from panic strings when a binary has no list: require one.
if ! readelf -S "$enclave" | grep -qF ' .dep-v0 '; then
    echo "error: $enclave has no .dep-v0 dependency list (enclave/runtime/build.rs embeds it)" >&2
    exit 1
fi
echo "==> cargo audit bin $enclave"
"${audit[@]}" bin "$enclave"
