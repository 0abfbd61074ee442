# Throwaway PostgreSQL clusters from the installed server binaries, for scripts/test and
# scripts/sqlx-prepare. Source this file, then `pg_start DIR`; it exports PG_URL, PGDATA_DIR,
# PG_RUN_AS and PG_BIN; `pg_stop` stops it. As root, the cluster runs as the `postgres` user
# (initdb refuses root).

pg_find_bin() {
  local d
  if [[ -n ${IPW_PG_BIN_DIR:-} ]]; then echo "$IPW_PG_BIN_DIR"; return; fi
  if command -v pg_config >/dev/null && [[ -x $(pg_config --bindir)/initdb ]]; then pg_config --bindir; return; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r) /usr/local/pgsql/bin; do
    [[ -x $d/initdb ]] && { echo "$d"; return; }
  done
  if command -v initdb >/dev/null; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
  return 1
}

pg_install_hint() {
  cat >&2 <<'HINT'
No PostgreSQL server binaries (initdb, pg_ctl) were found.
Install them, for example:
  Debian/Ubuntu:  apt-get install -y postgresql
  Fedora:         dnf install -y postgresql-server
  macOS:          brew install postgresql@16
or point IPW_PG_BIN_DIR at the directory holding initdb and pg_ctl.
HINT
}

# pg_as CMD...: runs CMD as the cluster's owner.
pg_as() {
  if [[ -n $PG_RUN_AS ]]; then runuser -u "$PG_RUN_AS" -- "$@"; else "$@"; fi
}

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

pg_start() {
  local root=$1
  PG_BIN=$(pg_find_bin) || { pg_install_hint; return 1; }
  PG_RUN_AS=
  if [[ $(id -u) == 0 ]]; then
    PG_RUN_AS=${IPW_PG_USER:-postgres}
    if ! id "$PG_RUN_AS" >/dev/null 2>&1; then
      useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_RUN_AS"
    fi
  fi
  mkdir -p "$root"
  PGDATA_DIR=$root/data
  [[ -n $PG_RUN_AS ]] && chown "$PG_RUN_AS" "$root"
  pg_as "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 --locale=C >"$root/initdb.log" 2>&1 \
    || { cat "$root/initdb.log" >&2; return 1; }
  PG_PORT=$(pg_free_port)
  cat >>"$PGDATA_DIR/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$root'
max_connections = 200
CONF
  pg_as "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$root/postgres.log" -w -t 60 start >/dev/null \
    || { cat "$root/postgres.log" >&2; return 1; }
  PG_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres
  export PG_URL PGDATA_DIR PG_RUN_AS PG_BIN PG_PORT
}

pg_stop() {
  [[ -n ${PGDATA_DIR:-} && -d $PGDATA_DIR ]] || return 0
  pg_as "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w stop >/dev/null 2>&1 || true
}

# pg_ensure_installed: installs Debian's PostgreSQL server when none is found and we can.
pg_ensure_installed() {
  pg_find_bin >/dev/null && return 0
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL server binaries (apt-get install postgresql)" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  fi
  pg_find_bin >/dev/null || { pg_install_hint; return 1; }
}

# pg_apply_migrations URL: applies migrations/*.sql in order (for the sqlx macro cache).
pg_apply_migrations() {
  local f
  for f in "$(dirname "${BASH_SOURCE[0]}")"/../../migrations/*.sql; do
    psql "$1" -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null || return 1
  done
}
