#!/usr/bin/env bash
# A private, throwaway PostgreSQL cluster for herald's PostgreSQL storage tests.
#
#   scripts/pg-cluster.sh start DIR   # stdout: one line, postgres://herald@127.0.0.1:PORT/herald
#   scripts/pg-cluster.sh stop DIR    # pg_ctl -m fast stop; fine if it is not running
#
#   url=$(scripts/pg-cluster.sh start /tmp/herald-pg)
#   POSTGRES_TEST_URL=$url cargo test --workspace
#   scripts/pg-cluster.sh stop /tmp/herald-pg && rm -rf /tmp/herald-pg
#
# start: DIR must be missing, empty, or a cluster this script made (then it is started again if
# it is stopped, and its URL printed). It uses Debian's binaries, /usr/lib/postgresql/*/bin of the
# newest version (or initdb/pg_ctl on PATH; PG_BINDIR=... overrides both), and creates:
#   DIR/data   the cluster (initdb, UTF8, C locale); DIR/data/herald.conf holds its settings:
#              listen_addresses='127.0.0.1' on a free TCP port, unix sockets in DIR (not
#              /var/run/postgresql), fsync=on, synchronous_commit=on, max_connections=300,
#              shared_buffers=128MB
#   DIR/log    the server's log (pg_ctl -l)
#   DIR/url    the URL printed
# Authentication: trust for TCP from 127.0.0.1 only (no ::1, no other host); peer on DIR's unix
# socket. A superuser role `herald` (tests create databases and schemas) owns a database `herald`.
# A start that loses its port to another process (a race between choosing and binding) retries
# with another port.
#
# initdb and pg_ctl refuse to run as root: as root, the PostgreSQL commands run as the `postgres`
# system user if it exists, else as a system user `herald-pg` (created on first use), through
# runuser (or su), and DIR is chowned to that user; DIR's parent directories must let it through
# (/tmp does). Otherwise they run as the calling user.
#
# Everything but the URL goes to stderr. Exits non-zero, with the end of DIR/log, on failure.
set -euo pipefail

# Keep stdout for the URL alone: fd 3 is the real stdout, everything else writes to stderr.
exec 3>&1 1>&2

usage() {
    echo "usage: $0 start|stop DIR" >&2
    exit 2
}
die() {
    echo "pg-cluster: $*" >&2
    exit 1
}
log() {
    echo "pg-cluster: $*" >&2
}

[ $# -eq 2 ] || usage
action=$1
dir=$2
case "$action" in start | stop) ;; *) usage ;; esac
[ -n "$dir" ] || usage

# An absolute path: it goes into the server's configuration and sockets.
if [ ! -e "$dir" ]; then
    [ "$action" = start ] || { log "$dir does not exist; nothing to stop"; exit 0; }
    mkdir -p -- "$dir"
fi
[ -d "$dir" ] || die "$dir is not a directory"
dir=$(cd -- "$dir" && pwd -P)
data="$dir/data"
logfile="$dir/log"
if [ "$action" = stop ] && ! [ -e "$data/PG_VERSION" ]; then
    log "no cluster in $dir; nothing to stop"
    exit 0
fi

# --- the binaries ------------------------------------------------------------------------------
find_bindir() {
    if [ -n "${PG_BINDIR:-}" ]; then
        [ -x "$PG_BINDIR/initdb" ] || die "PG_BINDIR=$PG_BINDIR has no initdb"
        echo "$PG_BINDIR"
        return
    fi
    local newest
    newest=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
        sort -V | tail -n 1)
    if [ -n "$newest" ]; then
        dirname -- "$newest"
        return
    fi
    local initdb
    if initdb=$(command -v initdb 2>/dev/null); then
        # Follow symlinks (e.g. /usr/local/bin/initdb) so pg_ctl and the rest are the same version.
        dirname -- "$(readlink -f -- "$initdb")"
        return
    fi
    die "no PostgreSQL: no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH" \
        "(apt-get install postgresql)"
}
bindir=$(find_bindir)
pgbin() {
    # A client program from the server's version, or PATH's.
    if [ -x "$bindir/$1" ]; then echo "$bindir/$1"; else command -v "$1" || die "no $1"; fi
}

# --- whom the server runs as --------------------------------------------------------------------
pg_user=""
if [ "$(id -u)" -eq 0 ]; then
    if [ -e "$data/PG_VERSION" ]; then
        pg_user=$(stat -c %U -- "$data")
    elif id -u postgres >/dev/null 2>&1; then
        pg_user=postgres
    else
        pg_user=herald-pg
        if ! id -u "$pg_user" >/dev/null 2>&1; then
            log "creating the system user $pg_user"
            nologin=$(command -v nologin || echo /bin/false)
            useradd --system --user-group --no-create-home --home-dir / \
                --shell "$nologin" "$pg_user" ||
                adduser --system --group --no-create-home --home / --shell "$nologin" "$pg_user"
        fi
    fi
    [ "$pg_user" != root ] || die "$data belongs to root; PostgreSQL will not run as root"
fi

# as_pg COMMAND ARGS...: runs COMMAND as the PostgreSQL user (directly when not root), from DIR.
# Without fd 3: a server holding the real stdout open would hang `url=$(... start DIR)`.
as_pg() {
    if [ -z "$pg_user" ]; then
        (cd -- "$dir" && "$@") 3>&-
    elif command -v runuser >/dev/null 2>&1; then
        (cd -- "$dir" && runuser -u "$pg_user" -- "$@") 3>&-
    else
        # shellcheck disable=SC2016 # $0 and $@ are the inner shell's: COMMAND and ARGS.
        (cd -- "$dir" && su -s /bin/sh "$pg_user" -c 'exec "$0" "$@"' -- "$@") 3>&-
    fi
}

running() {
    [ -e "$data/PG_VERSION" ] && as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1
}

# --- stop ---------------------------------------------------------------------------------------
if [ "$action" = stop ]; then
    if ! running; then
        log "the cluster in $dir is not running"
        exit 0
    fi
    as_pg "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 stop
    exit 0
fi

# --- start --------------------------------------------------------------------------------------
if [ ! -e "$data/PG_VERSION" ] && [ -n "$(ls -A -- "$dir")" ]; then
    die "$dir is neither empty nor a cluster made by this script; refusing to use it"
fi
# A unix socket's path is at most 107 bytes: DIR/.s.PGSQL.PORT (and its .lock).
if [ $((${#dir} + 20)) -gt 107 ]; then
    die "$dir is too long for a unix socket path (the sockets go in DIR); use a shorter one"
fi

if [ -n "$pg_user" ]; then
    if [ ! -e "$data/PG_VERSION" ]; then
        chown -- "$pg_user:" "$dir"
        chmod 0700 "$dir"
    fi
    as_pg test -w "$dir" ||
        die "user $pg_user cannot write to $dir (is a parent directory closed to it?);" \
            "use a directory under /tmp"
fi

# A TCP port on 127.0.0.1 that nothing listens on: the kernel's choice for a bind to port 0.
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
        return
    fi
    # No python3: a random port below the ephemeral range that refuses connections.
    local port tries
    for tries in $(seq 1 50); do
        port=$((20000 + RANDOM % 12000))
        if ! (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "found no free TCP port after $tries tries"
}

# herald.conf: the settings, included last by postgresql.conf (later settings win).
write_settings() {
    local port=$1
    as_pg tee "$data/herald.conf" >/dev/null <<EOF
# Written by herald's scripts/pg-cluster.sh.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = on
synchronous_commit = on
max_connections = 300
shared_buffers = 128MB
EOF
}

if [ ! -e "$data/PG_VERSION" ]; then
    log "initdb $data ($("$bindir/initdb" --version))"
    # Not `--auth=trust`: pg_hba.conf is rewritten below, trusting 127.0.0.1 only.
    as_pg "$bindir/initdb" -D "$data" --encoding=UTF8 --locale=C \
        --auth-local=peer --auth-host=reject >/dev/null
    as_pg tee "$data/pg_hba.conf" >/dev/null <<'EOF'
# Written by herald's scripts/pg-cluster.sh: a private test cluster.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 peer
host    all       all   127.0.0.1/32  trust
EOF
    echo "include 'herald.conf'" | as_pg tee -a "$data/postgresql.conf" >/dev/null
    port=$(free_port)
    write_settings "$port"
fi

port_of() {
    sed -n 's/^port = \([0-9][0-9]*\)$/\1/p' "$data/herald.conf"
}

if running; then
    log "the cluster in $dir is already running"
else
    attempt=0
    while :; do
        attempt=$((attempt + 1))
        port=$(port_of)
        offset=0
        if [ -e "$logfile" ]; then offset=$(stat -c %s -- "$logfile"); fi
        log "starting PostgreSQL on 127.0.0.1:$port (log: $logfile)"
        if as_pg "$bindir/pg_ctl" -D "$data" -l "$logfile" -w -t 60 start >/dev/null; then
            break
        fi
        recent=$(tail -c +$((offset + 1)) -- "$logfile" 2>/dev/null || true)
        bind_failed='could not bind|Address already in use|could not create any TCP/IP'
        if [ "$attempt" -lt 5 ] && grep -qE "$bind_failed" <<<"$recent"; then
            log "port $port was taken meanwhile; trying another"
            port=$(free_port)
            write_settings "$port"
            continue
        fi
        printf '%s\n' "$recent" | tail -n 30 >&2
        die "PostgreSQL did not start (log: $logfile)"
    done
fi
port=$(port_of)

# The bootstrap superuser is initdb's: the OS user the server runs as.
boot_user=${pg_user:-$(id -un)}
conninfo="host=127.0.0.1 port=$port user=$boot_user dbname=postgres"

# pg_ctl -w waits for the postmaster; pg_isready confirms it accepts connections on TCP.
pg_isready=$(pgbin pg_isready)
ready=false
for _ in $(seq 1 60); do
    if "$pg_isready" -q -d "$conninfo" -t 1; then ready=true; break; fi
    sleep 0.5
done
[ "$ready" = true ] || die "PostgreSQL on 127.0.0.1:$port does not answer (log: $logfile)"

psql=$(pgbin psql)
"$psql" -X -q -v ON_ERROR_STOP=1 -d "$conninfo" >/dev/null <<'EOF'
SELECT 'CREATE ROLE herald LOGIN SUPERUSER'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'herald') \gexec
ALTER ROLE herald LOGIN SUPERUSER;
SELECT 'CREATE DATABASE herald OWNER herald'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'herald') \gexec
EOF

url="postgres://herald@127.0.0.1:$port/herald"
as_pg tee "$dir/url" >/dev/null <<<"$url"
log "ready: $url"
echo "$url" >&3
