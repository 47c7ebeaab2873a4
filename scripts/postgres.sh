#!/usr/bin/env bash
# A throwaway PostgreSQL server on loopback, for the tests and benchmarks that use one.
#
#   scripts/postgres.sh install            put Debian's server binaries under .tools/postgresql
#   scripts/postgres.sh start DIR PORT     initdb DIR (if new) and start a server on 127.0.0.1:PORT
#   scripts/postgres.sh stop DIR           stop the server of DIR (fast shutdown)
#
# `install` uses the machine's PostgreSQL when it has one (/usr/lib/postgresql/*/bin); otherwise it
# downloads Debian's package and unpacks it under the project (no root-owned service, no systemd,
# nothing outside the project folder changes). The server trusts local connections of the user
# `postgres` (database `postgres`), listens on 127.0.0.1 only and keeps its socket in DIR.
# PostgreSQL refuses to run as root: as root, DIR is given to the unprivileged user `nobody` and
# the server runs as that user.
set -euo pipefail
tools=".tools/postgresql"

find_binaries() {
  local found
  for found in /usr/lib/postgresql/*/bin "$tools"/usr/lib/postgresql/*/bin; do
    if [ -x "$found/postgres" ] && [ -x "$found/initdb" ] && [ -x "$found/pg_ctl" ]; then
      echo "$found"
      return 0
    fi
  done
  return 1
}

install() {
  if find_binaries >/dev/null; then
    return 0
  fi
  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  # apt-get download needs current package lists; refresh them only when the first try fails.
  local package
  package="$(apt-cache depends postgresql 2>/dev/null | awk '/Depends: postgresql-[0-9]/ {print $2; exit}')"
  package="${package:-postgresql-15}"
  if ! (cd "$work" && apt-get download "$package" >/dev/null 2>&1); then
    apt-get update -qq >/dev/null
    (cd "$work" && apt-get download "$package" >/dev/null)
  fi
  mkdir -p "$tools"
  dpkg-deb -x "$work"/"$package"_*.deb "$tools"
  find_binaries >/dev/null
}

# Runs a command as the server's user: ourselves, or `nobody` when we are root.
as_server_user() {
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
  else
    "$@"
  fi
}

start() {
  local dir="$1" port="$2" bin
  install
  bin="$(find_binaries)"
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then
    chown nobody:nogroup "$dir"
  fi
  chmod 700 "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    as_server_user "$bin/initdb" --pgdata="$dir" --username=postgres --auth=trust \
      --encoding=UTF8 --locale=C.UTF-8 >"$dir.initdb.log" 2>&1 ||
      { cat "$dir.initdb.log" >&2; exit 1; }
  fi
  as_server_user "$bin/pg_ctl" --pgdata="$dir" --wait --timeout=60 --log="$dir/server.log" \
    -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir" \
    start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
}

stop() {
  local dir="$1" bin
  bin="$(find_binaries)"
  if [ -f "$dir/postmaster.pid" ]; then
    as_server_user "$bin/pg_ctl" --pgdata="$dir" --wait --timeout=60 --mode=fast stop >/dev/null
  fi
}

case "${1:-}" in
  install) install ;;
  start) start "$2" "$3" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 install | start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
