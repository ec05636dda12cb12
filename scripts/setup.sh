#!/usr/bin/env bash
# Idempotent environment set-up for Pressroom, used by the Makefile and .ci/run.
#
#   scripts/setup.sh SUBCOMMAND [SUBCOMMAND...]
#
#   venv       python3 + venv available; .venv exists; requirements.txt installed if it changed
#   venv-dev   as venv, plus requirements-dev.txt if it (or requirements.txt) changed
#   redis      a Redis server answers at $REDIS_URL (default redis://127.0.0.1:6379/0);
#              a local one is started (daemonized, data-less) under instance/ if needed
#   redis-bin  the redis-server binary is installed (the tests start their own servers)
#   chromium   /usr/bin/chromium is installed (Playwright drives it via executable_path)
#   wrk        the wrk HTTP benchmark tool is installed (for `make bench`)
#   postgres   CI only: the PostgreSQL named by $TEST_DATABASE_URL answers; a local
#              Debian cluster on 127.0.0.1:5432 is started if it does not
#
# Several subcommands may be given at once; apt-get update then runs at most once in all,
# and only when something has to be installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
INSTANCE="$ROOT/instance"
WAIT_SECS="${SETUP_WAIT_SECS:-30}"
APT_UPDATED=0

say() { printf '[setup] %s\n' "$*"; }
warn() { printf '[setup] warning: %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }
have() { command -v "$1" >/dev/null 2>&1; }

# Install Debian packages, or explain what to install and stop when we can't.
apt_install() {
    if ! have apt-get; then
        die "please install: $* (no apt-get here; use your system's package manager)"
    fi
    if ! is_root; then
        die "please install: $* (run: sudo apt-get install -y $*), then re-run this command"
    fi
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    say "apt-get install -y $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

sha256_of() { sha256sum "$@" | awk '{print $1}' | tr -d '\n'; }

# ---------------------------------------------------------------- venv

venv_python_ok() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1
}

ensure_python() {
    if have "$PYTHON" && "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        return 0
    fi
    say "$PYTHON with venv support not found"
    apt_install python3 python3-venv python3-pip
    have "$PYTHON" || die "$PYTHON still not found after installing python3"
}

make_venv() {
    ensure_python
    say "creating .venv with $("$PYTHON" --version 2>&1)"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV"; then
        # Debian's python3 lacks ensurepip until python3-venv (python3.X-venv) is installed.
        rm -rf "$VENV"
        say "'$PYTHON -m venv' failed; installing the venv package"
        local ver
        ver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        if have apt-get && apt-cache show "python${ver}-venv" >/dev/null 2>&1; then
            apt_install python3-venv "python${ver}-venv"
        else
            apt_install python3-venv
        fi
        "$PYTHON" -m venv "$VENV" || die "'$PYTHON -m venv $VENV' still fails"
    fi
}

# pip_sync REQFILE STAMP HASH: install REQFILE into .venv unless STAMP already holds HASH.
pip_sync() {
    local req="$1" stamp="$2" want="$3"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "$req unchanged since last install"
        return 0
    fi
    say "pip install -r $req"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -r "$req"
    printf '%s\n' "$want" >"$stamp"
}

cmd_venv() {
    [ -f requirements.txt ] || die "requirements.txt not found in $ROOT"
    if venv_python_ok; then
        say ".venv present ($("$VENV/bin/python" --version 2>&1))"
    else
        [ -e "$VENV" ] && say ".venv is missing or broken; rebuilding it"
        make_venv
    fi
    pip_sync requirements.txt "$VENV/.req-stamp" "$(sha256_of requirements.txt)"
    compile_catalogs
}

# The interface's translations: .po files are the source, .mo what Flask-Babel reads.
compile_catalogs() {
    "$VENV/bin/pybabel" -q compile -d "$ROOT/webapp/translations" \
        || die "could not compile the translations in webapp/translations"
}

cmd_venv_dev() {
    cmd_venv
    [ -f requirements-dev.txt ] || die "requirements-dev.txt not found in $ROOT"
    # requirements-dev.txt includes requirements.txt, so the stamp covers both.
    pip_sync requirements-dev.txt "$VENV/.req-dev-stamp" \
        "$(sha256_of requirements-dev.txt requirements.txt | sha256sum | awk '{print $1}')"
}

# ---------------------------------------------------------------- redis

# parse_url URL DEFAULT_PORT: sets URL_HOST, URL_PORT, URL_USER, URL_PASS.
parse_url() {
    local url="$1" rest hostport auth
    rest="${url#*://}"
    rest="${rest%%/*}"
    rest="${rest%%\?*}"
    URL_USER="" URL_PASS=""
    if [[ "$rest" == *@* ]]; then
        auth="${rest%@*}"
        hostport="${rest##*@}"
        if [[ "$auth" == *:* ]]; then
            URL_USER="${auth%%:*}"
            URL_PASS="${auth#*:}"
        else
            URL_USER="$auth"
        fi
    else
        hostport="$rest"
    fi
    if [[ "$hostport" == \[* ]]; then # [ipv6]:port
        URL_HOST="${hostport#\[}"
        URL_HOST="${URL_HOST%%\]*}"
        URL_PORT="${hostport##*\]}"
        URL_PORT="${URL_PORT#:}"
    elif [[ "$hostport" == *:* ]]; then
        URL_HOST="${hostport%%:*}"
        URL_PORT="${hostport##*:}"
    else
        URL_HOST="$hostport"
        URL_PORT=""
    fi
    [ -n "$URL_HOST" ] || URL_HOST=127.0.0.1
    [ -n "$URL_PORT" ] || URL_PORT="$2"
    [[ "$URL_PORT" =~ ^[0-9]+$ ]] || die "cannot read a port from URL '$url'"
}

is_local_host() {
    case "$1" in
        localhost | 127.* | ::1) return 0 ;;
        *) return 1 ;;
    esac
}

# redis_ping HOST PORT: true when a Redis server answers PONG.
redis_ping() {
    local host="$1" port="$2" out
    if have redis-cli; then
        # REDISCLI_AUTH keeps the password off the command line (an empty one makes redis-cli
        # send AUTH ""); timeout bounds a hung connect.
        local -a cli=(timeout 5 redis-cli -h "$host" -p "$port")
        [ -z "$URL_USER" ] || cli+=(--user "$URL_USER")
        if [ -n "$URL_PASS" ]; then
            out="$(REDISCLI_AUTH="$URL_PASS" "${cli[@]}" ping 2>/dev/null)" || return 1
        else
            out="$("${cli[@]}" ping 2>/dev/null)" || return 1
        fi
        [ "$out" = "PONG" ]
    else
        local py="$PYTHON"
        [ -x "$VENV/bin/python" ] && py="$VENV/bin/python"
        REDIS_PING_USER="$URL_USER" REDIS_PING_PASS="$URL_PASS" "$py" - "$host" "$port" <<'PY' >/dev/null 2>&1
import os, socket, sys
def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
    user, pw = os.environ.get("REDIS_PING_USER"), os.environ.get("REDIS_PING_PASS")
    if pw:
        s.sendall(cmd("AUTH", *([user] if user else []), pw))
        if not s.recv(256).startswith(b"+OK"):
            sys.exit(1)
    s.sendall(cmd("PING"))
    sys.exit(0 if s.recv(256).startswith(b"+PONG") else 1)
PY
    fi
}

ensure_redis_server_bin() {
    if have redis-server; then
        return 0
    fi
    say "redis-server not found"
    apt_install redis-server
    have redis-server || die "redis-server still not found after installing it"
}

cmd_redis_bin() {
    ensure_redis_server_bin
    say "redis-server present ($(redis-server --version | awk '{print $3}'))"
}

cmd_redis() {
    local url="${REDIS_URL:-redis://127.0.0.1:6379/0}"
    case "$url" in
        redis://* | rediss://*) ;;
        *) die "REDIS_URL '$url' is not a redis:// URL; make sure that server runs yourself" ;;
    esac
    parse_url "$url" 6379
    local host="$URL_HOST" port="$URL_PORT"
    if redis_ping "$host" "$port"; then
        say "Redis answers at $host:$port"
        return 0
    fi
    if ! is_local_host "$host"; then
        die "no Redis answers at $host:$port (from REDIS_URL); start it, or point REDIS_URL at one that runs"
    fi
    ensure_redis_server_bin
    # Installing the package may have started the system service on this very port.
    if redis_ping "$host" "$port"; then
        say "Redis answers at $host:$port"
        return 0
    fi

    mkdir -p "$INSTANCE"
    local pidfile="$INSTANCE/redis.pid" logfile="$INSTANCE/redis.log" pid=""
    if [ -f "$pidfile" ]; then
        pid="$(cat "$pidfile" 2>/dev/null || true)"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
            && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "redis-server" ]; then
            # redis-server sets its process title to "redis-server HOST:PORT".
            local title
            title="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | sed 's/ *$//' || true)"
            if [[ "$title" != *":$port"* ]]; then
                die "instance/redis.pid belongs to another redis-server ($title, pid $pid); stop it with: kill \$(cat instance/redis.pid)"
            fi
            say "redis-server (pid $pid) from instance/redis.pid is running but not answering yet; waiting"
        else
            rm -f "$pidfile"
            pid=""
        fi
    fi
    if [ -z "$pid" ]; then
        local -a bind=(127.0.0.1)
        [ "$host" != "::1" ] || bind+=(::1)
        say "starting redis-server on $host:$port (log: instance/redis.log, pid: instance/redis.pid)"
        [ -n "$URL_PASS" ] && warn "REDIS_URL has a password, but the local server is started without one"
        redis-server --daemonize yes --bind "${bind[@]}" --port "$port" \
            --save "" --appendonly no --dir "$INSTANCE" \
            --logfile "$logfile" --pidfile "$pidfile"
    fi
    local deadline=$((SECONDS + WAIT_SECS))
    until redis_ping "$host" "$port"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            warn "last lines of $logfile:"
            tail -n 15 "$logfile" >&2 2>/dev/null || true
            die "redis-server did not answer at $host:$port within ${WAIT_SECS}s"
        fi
        sleep 0.1
    done
    say "Redis answers at $host:$port (pid $(cat "$pidfile" 2>/dev/null || echo '?'); stop it with: kill \$(cat instance/redis.pid))"
}

# ---------------------------------------------------------------- chromium, wrk

cmd_chromium() {
    if [ ! -x /usr/bin/chromium ]; then
        say "/usr/bin/chromium not found"
        apt_install chromium
        [ -x /usr/bin/chromium ] || die "/usr/bin/chromium still missing after installing chromium"
    fi
    say "chromium present ($(/usr/bin/chromium --version 2>/dev/null | head -n 1 || echo 'version unknown'))"
    # The browser suite reads and photographs pages in Chinese: without a CJK font every
    # character would be drawn as an empty box.
    if ! fc-list :lang=zh 2>/dev/null | grep -q .; then
        say "no Chinese font found"
        apt_install fonts-wqy-microhei
    fi
}

cmd_wrk() {
    if ! have wrk; then
        say "wrk not found"
        apt_install wrk
    fi
    say "wrk present"
}

# ---------------------------------------------------------------- postgres

pg_ready() {
    local host="$1" port="$2"
    if have pg_isready; then
        pg_isready -q -h "$host" -p "$port" -t 2
    else
        timeout 3 bash -c ": >/dev/tcp/$host/$port" 2>/dev/null
    fi
}

cmd_postgres() {
    local url="${TEST_DATABASE_URL:-}"
    if [ -z "$url" ]; then
        say "TEST_DATABASE_URL not set; nothing to do for postgres"
        return 0
    fi
    case "$url" in
        postgres://* | postgresql://* | postgresql+*://*) ;;
        *) say "TEST_DATABASE_URL is not a PostgreSQL URL; nothing to do for postgres"; return 0 ;;
    esac
    parse_url "$url" 5432
    local host="$URL_HOST" port="$URL_PORT"
    if pg_ready "$host" "$port"; then
        say "PostgreSQL answers at $host:$port"
    elif [ "$port" = 5432 ] && { [ "$host" = 127.0.0.1 ] || [ "$host" = localhost ]; }; then
        have pg_ctlcluster || die "PostgreSQL is not running at $host:$port and pg_ctlcluster is missing (install postgresql)"
        is_root || die "PostgreSQL is not running at $host:$port; start it (sudo pg_ctlcluster <version> main start)"
        local ver
        ver="$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)"
        [ -n "$ver" ] || die "no cluster under /etc/postgresql; install postgresql"
        say "starting PostgreSQL $ver/main"
        pg_ctlcluster --skip-systemctl-redirect "$ver" main start || warn "pg_ctlcluster $ver main start failed"
        local deadline=$((SECONDS + WAIT_SECS))
        until pg_ready "$host" "$port"; do
            [ "$SECONDS" -lt "$deadline" ] || die "PostgreSQL did not answer at $host:$port within ${WAIT_SECS}s"
            sleep 0.2
        done
        say "PostgreSQL answers at $host:$port"
    else
        die "no PostgreSQL answers at $host:$port (from TEST_DATABASE_URL)"
    fi

    # Make sure the database the URL names exists (fresh clusters have only postgres).
    local db="${url#*://}"
    db="${db#*/}"
    db="${db%%\?*}"
    if [ -n "$db" ] && [ "$db" != "${url#*://}" ] && have psql; then
        local admin="postgresql://${URL_USER:-postgres}@$host:$port/postgres"
        local found
        if found="$(PGPASSWORD="$URL_PASS" psql "$admin" -tAc \
            "SELECT 1 FROM pg_database WHERE datname = '${db//\'/\'\'}'" 2>/dev/null)"; then
            if [ "$found" != 1 ]; then
                say "creating database $db"
                PGPASSWORD="$URL_PASS" psql "$admin" -qc "CREATE DATABASE \"$db\"" \
                    || warn "could not create database $db"
            fi
        else
            warn "could not check whether database $db exists"
        fi
    fi
}

# ---------------------------------------------------------------- main

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

[ "$#" -gt 0 ] || { usage >&2; exit 2; }
for sub in "$@"; do
    case "$sub" in
        venv) cmd_venv ;;
        venv-dev) cmd_venv_dev ;;
        redis) cmd_redis ;;
        redis-bin) cmd_redis_bin ;;
        chromium) cmd_chromium ;;
        wrk) cmd_wrk ;;
        postgres) cmd_postgres ;;
        -h | --help | help) usage; exit 0 ;;
        *) usage >&2; die "unknown subcommand '$sub'" ;;
    esac
done
