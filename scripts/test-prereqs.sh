#!/usr/bin/env bash
# What `make test` needs besides the Python packages, made ready on this machine:
#   - PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (started when they are down);
#   - Debian's Chromium at /usr/bin/chromium for the browser tests (installed when missing; never a
#     browser downloaded by a test tool).
# A piece that is missing and cannot be made ready stops here with a message naming it: the suite never
# skips the tests that need it.
set -uo pipefail

say() { echo "test-prereqs: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# Root, or sudo without a password prompt, for starting system services and installing packages.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"; else return 1; fi
}

wait_for() {  # wait_for SECONDS COMMAND...
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  return 1
}

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; }

# --- PostgreSQL -----------------------------------------------------------------------------------
if [ -z "${TEST_PG_ADMIN_URL:-}" ] && ! pg_up 2>/dev/null; then
  command -v pg_ctlcluster >/dev/null || die "PostgreSQL is not running on 127.0.0.1:5432 and pg_ctlcluster is not installed (apt-get install postgresql), or set TEST_PG_ADMIN_URL"
  say "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start \
    || die "PostgreSQL is not running on 127.0.0.1:5432 and could not be started (pg_ctlcluster ... main start)"
  wait_for 30 pg_up || die "PostgreSQL was started but does not answer on 127.0.0.1:5432"
fi

# --- Redis ----------------------------------------------------------------------------------------
if [ -z "${TEST_REDIS_URL:-}" ] && ! redis_up 2>/dev/null; then
  command -v redis-server >/dev/null || die "Redis is not running on 127.0.0.1:6379 and redis-server is not installed (apt-get install redis-server), or set TEST_REDIS_URL"
  say "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log \
    || die "Redis is not running on 127.0.0.1:6379 and could not be started"
  wait_for 30 redis_up || die "Redis was started but does not answer on 127.0.0.1:6379"
fi

# --- Chromium (Debian's package) ------------------------------------------------------------------
if [ ! -x /usr/bin/chromium ]; then
  command -v apt-get >/dev/null || die "/usr/bin/chromium is missing and apt-get is not available: install Debian's chromium package"
  say "installing Debian's chromium package (browser tests)"
  as_root env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null' \
    || die "/usr/bin/chromium is missing and 'apt-get install chromium' failed (needs root or passwordless sudo, and the package mirror)"
  [ -x /usr/bin/chromium ] || die "'apt-get install chromium' ran but /usr/bin/chromium is still missing"
fi
exit 0
