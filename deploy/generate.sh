#!/usr/bin/env bash
# Makes the keys, certificates, tokens and configuration files an overlay's kustomization reads,
# in deploy/overlays/<overlay>/generated/ (git-ignored; mode 0600 for secrets). Nothing secret is
# ever committed: run this, review, then `kubectl apply -k deploy/overlays/<overlay>`.
#
#   deploy/generate.sh example
#       The example overlay and its witness (overlays/example-witness): the service's keys, a
#       witness's keys, the example PostgreSQL's password and the URL that reaches it.
#   deploy/generate.sh managed-db --database-url URL --database-ca PEM \
#           --witness-url URL --witness-vkey VKEY --witness-ca PEM
#       The service's keys for a managed PostgreSQL (URL with sslmode=verify-full and
#       sslrootcert=/nacre/db-ca/ca.crt; PEM is the database's CA), pushing to a witness someone
#       else runs (its URL, its vkey and its TLS CA, from its operator).
#
# The tokens for people (admin, auditor) are written to generated/operator/, which no
# kustomization reads: hand them to their holders. The cluster gets their SHA-256 digests only.
# The `metrics` token (Prometheus) goes into the cluster, since Prometheus must send it.
# Environment: NACRE (the nacre binary; default `nacre` on PATH), NACRE_FORCE=1 to overwrite.
set -euo pipefail

deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
nacre=${NACRE:-nacre}
die() { echo "error: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: $0 example | managed-db --database-url URL --database-ca PEM --witness-url URL --witness-vkey VKEY --witness-ca PEM"
overlay=$1
shift
database_url='' database_ca='' witness_url='' witness_vkey='' witness_ca=''
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "$1 needs a value"
    case "$1" in
        --database-url) database_url=$2 ;;
        --database-ca) database_ca=$2 ;;
        --witness-url) witness_url=$2 ;;
        --witness-vkey) witness_vkey=$2 ;;
        --witness-ca) witness_ca=$2 ;;
        *) die "unknown option $1" ;;
    esac
    shift 2
done
case "$overlay" in
    example) ;;
    managed-db)
        [ -n "$database_url" ] && [ -n "$database_ca" ] && [ -n "$witness_url" ] && [ -n "$witness_vkey" ] &&
            [ -n "$witness_ca" ] || die "managed-db needs --database-url, --database-ca, --witness-url, --witness-vkey and --witness-ca"
        case "$database_url" in
            postgres://*sslmode=verify-full*) ;;
            *) die "--database-url: a postgres:// URL with sslmode=verify-full (and sslrootcert=/nacre/db-ca/ca.crt)" ;;
        esac
        ;;
    *) die "unknown overlay $overlay (example, managed-db)" ;;
esac
command -v "$nacre" >/dev/null || die "$nacre not found: set NACRE to the nacre binary"

out=$deploy/overlays/$overlay/generated
if [ -e "$out" ]; then
    [ "${NACRE_FORCE:-0}" = 1 ] || die "$out exists (NACRE_FORCE=1 replaces it, and every key in it)"
    rm -rf "$out"
fi
umask 077
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$out/attestation" "$out/operator"

# The service's keys and certificate. Its certificate names the in-cluster Service and
# 10.0.2.100, where guests reach it through their host agent's relay (and 127.0.0.1, for
# port-forwards).
svc=nacre-attestation.nacre-attestation.svc
"$nacre" attestation init "$scratch/svc" --listen 127.0.0.1:8443 --san "$svc" --san "$svc.cluster.local" \
    --san 10.0.2.100 >"$scratch/svc.out"
log_vkey=$(tail -n 1 "$scratch/svc.out")
origin=$(sed -n 's/^log_origin = "\(.*\)"$/\1/p' "$scratch/svc/config.toml")
cp "$scratch/svc/master.key" "$scratch/svc/result.key" "$scratch/svc/log.key" "$out/attestation/"
cp "$scratch/svc/tls.pem" "$out/attestation/tls.crt"
cp "$scratch/svc/tls.key" "$out/attestation/tls.key"
cp "$scratch/svc/ca.pem" "$out/attestation/ca.crt"
cp "$scratch/svc/admin.token" "$scratch/svc/auditor.token" "$out/operator/"
cp "$scratch/svc/ca.pem" "$out/operator/attestation-ca.pem"
echo "$log_vkey" >"$out/operator/log.vkey"
# Token digests, as the service's config holds them (the generated config's [[tokens]]), plus a
# metrics token for Prometheus.
metrics_token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
metrics_sha=$(printf '%s' "$metrics_token" | sha256sum | cut -d' ' -f1)
printf '%s' "$metrics_token" >"$out/attestation/metrics.token"
{
    sed -n '/^\[\[tokens\]\]/,$p' "$scratch/svc/config.toml"
    printf '\n[[tokens]]\nname = "prometheus"\nrole = "metrics"\nsha256 = "%s"\n' "$metrics_sha"
} >"$out/attestation/tokens.toml"

if [ "$overlay" = example ]; then
    # A witness of our own, in its own overlay (in production: someone else's).
    wout=$deploy/overlays/example-witness/generated
    rm -rf "$wout"
    mkdir -p "$wout"
    wsvc=nacre-witness.nacre-witness.svc
    "$nacre" witness init "$scratch/witness" --name "$wsvc/example" --listen 127.0.0.1:8444 --san "$wsvc" \
        --san "$wsvc.cluster.local" --log "$log_vkey" >"$scratch/witness.out"
    witness_vkey=$(tail -n 1 "$scratch/witness.out")
    witness_url=https://$wsvc:8444
    cp "$scratch/witness/witness.key" "$wout/"
    cp "$scratch/witness/tls.pem" "$wout/tls.crt"
    cp "$scratch/witness/tls.key" "$wout/tls.key"
    cp "$scratch/witness/ca.pem" "$wout/ca.crt"
    echo "$witness_vkey" >"$wout/witness.vkey"
    cat >"$wout/witness.toml" <<TOML
# Generated by deploy/generate.sh. Paths are relative to this file (/nacre/config).
listen = "0.0.0.0:8444"
name = "$wsvc/example"
key_file = "../keys/witness.key"
state_file = "../state/witness.state"
tls_cert = "../tls/tls.crt"
tls_key = "../tls/tls.key"

[[logs]]
vkey = "$log_vkey"
TOML
    witness_ca=$scratch/witness/ca.pem
    password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    printf '%s' "$password" >"$out/attestation/postgres-password"
    # In-namespace, behind its NetworkPolicy; a managed database is reached with verify-full.
    database_url="postgres://nacre:$password@nacre-postgres.nacre-attestation.svc:5432/nacre?sslmode=disable"
else
    cp "$database_ca" "$out/attestation/db-ca.crt"
fi
printf '%s' "$database_url" >"$out/attestation/database-url"
cp "$witness_ca" "$out/attestation/witness-ca.crt"

cat >"$out/attestation/config.toml" <<TOML
# Generated by deploy/generate.sh. Paths are relative to this file (/nacre/config).
listen = "0.0.0.0:8443"
# The URL comes from the Secret nacre-attestation-database, through this variable.
database_env = "NACRE_DATABASE_URL"
tls_cert = "../tls/tls.crt"
tls_key = "../tls/tls.key"
master_key_file = "../keys/master.key"
result_signing_key = "../keys/result.key"
log_signing_key = "../keys/log.key"
log_origin = "$origin"
tokens_file = "../tokens/tokens.toml"
# Add the image signers whose reference values may be imported (nacre image key).
trusted_image_signers = []

[[witnesses]]
url = "$witness_url"
ca = "../witness-ca/ca.crt"
vkey = "$witness_vkey"

[limits]
# Two replicas share the database: 8 connections each.
db_connections = 8
TOML
chmod -R go-rwx "$out"
echo "generated $out"
echo "log key (witnesses and clients pin it): $log_vkey"
echo "witness: $witness_vkey"
echo "tokens for people: $out/operator/ (not applied to the cluster)"
