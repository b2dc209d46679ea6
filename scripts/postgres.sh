#!/usr/bin/env bash
# A real, throwaway PostgreSQL server on loopback for the test suite, so that the attestation
# service's storage tests run against PostgreSQL as well as SQLite.
#
#   url=$(scripts/postgres.sh start DIR)   # fresh cluster in DIR; prints its URL, and only that, on stdout
#   scripts/postgres.sh stop DIR           # stops it (no error when it is not running)
#
# `start` installs Debian's PostgreSQL when missing (apt-get, needs root; the packaged "main" cluster
# is not created), then makes a new cluster in DIR/data, listening only on 127.0.0.1 on a free port,
# with its socket in DIR/socket and its log in DIR/server.log. It has a role `nacre` (LOGIN, CREATEDB,
# random password, scram-sha-256 over TCP) owning a database `nacre`, and prints
# postgres://nacre:PASSWORD@127.0.0.1:PORT/nacre (also kept in DIR/url, mode 0600).
# `start` on a DIR that already holds one of these clusters stops it and starts over from an empty
# database; it refuses a DIR that is neither empty nor one of its own.
# The server cannot run as root: as root it runs as the `postgres` system user (which must be able to
# reach DIR, e.g. under /tmp); otherwise as the calling user. Everything but the URL goes to stderr.
# Environment: PG_BINDIR (default: the highest /usr/lib/postgresql/<version>/bin), PG_TIMEOUT (s, 60);
# PG_TLS_CERT and PG_TLS_KEY (PEM): TCP then takes TLS only (hostssl), as a managed database does.
set -euo pipefail

usage() {
    echo "usage: $0 start DIR | stop DIR" >&2
    exit 2
}
[ $# -eq 2 ] || usage
cmd=$1
case "$cmd" in start | stop) ;; *) usage ;; esac
[ -n "$2" ] || usage
dir=$(realpath -m -- "$2")
case "$dir" in *[\'\\]*) echo "error: DIR must not contain ' or \\ (it goes into postgresql.conf)" >&2; exit 2 ;; esac
timeout=${PG_TIMEOUT:-60}
marker=.nacre-postgres # marks a DIR as one of ours, so `start` may wipe it

die() {
    echo "error: $*" >&2
    exit 1
}
log() { echo "postgres.sh: $*" >&2; }

# The real server binaries (/usr/local/bin or pg_wrapper's /usr/bin links may point anywhere).
find_bindir() {
    if [ -n "${PG_BINDIR:-}" ]; then
        echo "$PG_BINDIR"
        return
    fi
    local candidates=(/usr/lib/postgresql/*/bin/initdb)
    [ -x "${candidates[0]}" ] || return 0
    printf '%s\n' "${candidates[@]}" | sort -V | tail -n 1 | xargs dirname
}

# initdb, pg_ctl and postgres refuse to run as root: as root, run them as an unprivileged user.
server_user=$(id -un)
as_server() {
    if [ "$(id -u)" -eq 0 ]; then
        (cd / && runuser -u "$server_user" -- "$@")
    else
        "$@"
    fi
}
if [ "$(id -u)" -eq 0 ]; then
    server_user=postgres
fi

# Exit status of `pg_ctl status`: 0 running, 3 not running, 4 no data directory.
server_running() {
    [ -f "$dir/data/PG_VERSION" ] || return 1
    local rc=0
    as_server "$bindir/pg_ctl" status -D "$dir/data" >/dev/null 2>&1 || rc=$?
    [ "$rc" -eq 0 ]
}

stop_server() {
    if server_running; then
        log "stopping the server in $dir"
        as_server "$bindir/pg_ctl" stop -D "$dir/data" -m fast -w -t "$timeout" >&2
    fi
}

if [ "$cmd" = stop ]; then
    bindir=$(find_bindir)
    # Nothing installed or no cluster there: nothing can be running.
    if [ -z "$bindir" ] || [ ! -f "$dir/data/PG_VERSION" ]; then
        exit 0
    fi
    if [ "$(id -u)" -eq 0 ]; then
        server_user=$(stat -c %U "$dir/data")
    fi
    stop_server
    exit 0
fi

# --- start ---

bindir=$(find_bindir)
if [ -z "$bindir" ]; then
    [ "$(id -u)" -eq 0 ] || die "PostgreSQL is not installed and installing it needs root (apt-get install postgresql)"
    log "installing PostgreSQL (apt-get install postgresql)"
    # No packaged "main" cluster: it would listen on localhost:5432 (::1 as well) for good.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/nacre-no-main.conf
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q postgresql >&2
    bindir=$(find_bindir)
    [ -n "$bindir" ] || die "apt-get installed postgresql but there is no /usr/lib/postgresql/*/bin/initdb"
fi
for tool in initdb pg_ctl pg_isready psql; do
    [ -x "$bindir/$tool" ] || die "$bindir/$tool is missing (set PG_BINDIR to the server's bin directory)"
done

if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
    log "creating the system user postgres to run the server"
    useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home \
        --shell /usr/sbin/nologin postgres
fi

# Start over in DIR: stop a server of ours that is still running there, then empty it.
if [ -e "$dir" ]; then
    [ -d "$dir" ] || die "$dir exists and is not a directory"
    if [ -e "$dir/$marker" ]; then
        if [ -f "$dir/data/PG_VERSION" ]; then
            [ "$(id -u)" -ne 0 ] || server_user=$(stat -c %U "$dir/data")
            stop_server
            [ "$(id -u)" -ne 0 ] || server_user=postgres
        fi
        find "$dir" -mindepth 1 -delete
    elif [ -n "$(ls -A "$dir")" ]; then
        die "$dir is not empty and was not made by $0: refusing to wipe it"
    fi
fi
# The socket's path, DIR/socket/.s.PGSQL.<port>, must fit in sun_path (107 bytes).
[ ${#dir} -le 85 ] ||
    die "$dir is too long for a Unix socket path inside it: use a shorter DIR (e.g. under /tmp)"
mkdir -p "$dir"
touch "$dir/$marker"
mkdir -p "$dir/data" "$dir/socket"
if [ "$(id -u)" -eq 0 ]; then
    chown -R "$server_user:" "$dir"
    as_server test -w "$dir" ||
        die "user $server_user cannot write to $dir (a parent directory is closed to it): use a DIR under /tmp"
fi
chmod 0700 "$dir" "$dir/data" "$dir/socket"

log "creating a cluster in $dir/data ($("$bindir/postgres" --version))"
as_server "$bindir/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; die "initdb failed (log above, also in $dir/initdb.log)"; }

# Unix socket: only the server's user can reach it (directory and socket mode 0700), trusted; TCP:
# 127.0.0.1 only, password (scram-sha-256). No ::1, no replication entries.
tcp=host
if [ -n "${PG_TLS_CERT:-}" ]; then
    [ -n "${PG_TLS_KEY:-}" ] || die "PG_TLS_CERT needs PG_TLS_KEY"
    cp "$PG_TLS_CERT" "$dir/data/server.crt"
    cp "$PG_TLS_KEY" "$dir/data/server.key"
    [ "$(id -u)" -ne 0 ] || chown "$server_user:" "$dir/data/server.crt" "$dir/data/server.key"
    chmod 0600 "$dir/data/server.key"
    tcp=hostssl
fi
cat >"$dir/data/pg_hba.conf" <<EOF
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
$tcp    all       all   127.0.0.1/32  scram-sha-256
EOF

# Settings of ours, last in postgresql.conf so that they win.
echo "include 'nacre.conf'" >>"$dir/data/postgresql.conf"

# A port the kernel hands out as free; without a working python3, a random one (retried below).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
        2>/dev/null || echo $((20000 + RANDOM % 40000))
}

# Clean up after a failed start: no server left running in DIR.
started=0
trap '[ "$started" -eq 0 ] || stop_server || true' EXIT

# The port is free when picked but could be taken before the server binds it: then try another.
for attempt in 1 2 3 4 5; do
    port=$(free_port)
    cat >"$dir/data/nacre.conf" <<EOF
# Set by scripts/postgres.sh.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/socket'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
ssl = $([ "$tcp" = hostssl ] && echo on || echo off)
EOF
    : >"$dir/server.log"
    [ "$(id -u)" -ne 0 ] || chown "$server_user:" "$dir/server.log" "$dir/data/nacre.conf"
    log "starting the server on 127.0.0.1:$port"
    if as_server "$bindir/pg_ctl" start -D "$dir/data" -l "$dir/server.log" -w -t "$timeout" >&2; then
        started=1
        break
    fi
    if [ "$attempt" -lt 5 ] && grep -q "could not bind\|Address already in use" "$dir/server.log"; then
        log "port $port was taken, trying another"
        continue
    fi
    cat "$dir/server.log" >&2
    die "the server did not start (its log is above, also in $dir/server.log)"
done

deadline=$((SECONDS + timeout))
until "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -t 5; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        cat "$dir/server.log" >&2
        die "the server does not accept connections on 127.0.0.1:$port after ${timeout}s (log above, also in $dir/server.log)"
    fi
    sleep 0.2
done

# Hex: nothing to escape in the URL or in SQL. Given on stdin, so it is never in a process listing.
password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
as_server "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/socket" -p "$port" -U postgres -d postgres >&2 <<EOF
CREATE ROLE nacre LOGIN CREATEDB PASSWORD '$password';
CREATE DATABASE nacre OWNER nacre;
EOF

url="postgres://nacre:$password@127.0.0.1:$port/nacre"
# Check what the URL says: TCP, the password (in the environment, not on a command line), the database.
PGPASSWORD=$password "$bindir/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U nacre -d nacre \
    -c 'SELECT 1' >/dev/null ||
    die "the server is up but $url does not work (server log: $dir/server.log)"
(umask 077 && echo "$url" >"$dir/url")

started=0
log "ready; stop it with: $0 stop $dir"
echo "$url"
