#!/usr/bin/env bash
# A PostgreSQL server for the shared-study tests: Debian's package, the system cluster (initdb
# refuses root), a role and a database. Safe to run again.
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
read -r version cluster < <(pg_lsclusters --no-header | awk 'NR == 1 {print $1, $2}')
pg_ctlcluster "$version" "$cluster" start 2>/dev/null || true  # already running is fine
for _ in $(seq 30); do
    su postgres -c "pg_isready -q" && break
    sleep 1
done
as_postgres() { su postgres -c "psql -qtAX -c \"$1\""; }
[ "$(as_postgres "SELECT 1 FROM pg_roles WHERE rolname = 'maskclf'")" = 1 ] \
    || as_postgres "CREATE ROLE maskclf LOGIN PASSWORD 'maskclf'"
[ "$(as_postgres "SELECT 1 FROM pg_database WHERE datname = 'maskclf_test'")" = 1 ] \
    || as_postgres "CREATE DATABASE maskclf_test OWNER maskclf"
echo "postgresql $version/$cluster ready"
