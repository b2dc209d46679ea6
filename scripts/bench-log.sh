#!/usr/bin/env bash
# The transparency log's sizes and costs at 1,000,000 leaves (attestation/tlog/benches/log.rs):
# checkpoint and proof sizes, the client's whole log check with K = 2 cosignatures, proof and
# tile generation, appends. Release build; prints a table and the load average around it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench -p nacre-tlog --bench log
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
