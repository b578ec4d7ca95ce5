# Shared by this directory's scripts (sourced): waiting for a port, and a PostgreSQL of
# their own in $work (default durability: fsync and synchronous commit on), started as the
# postgres user with initdb and pg_ctl.

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

# start_pg PORT: a new cluster in $work/pg listening on 127.0.0.1:PORT.
start_pg() {
    chown postgres "$work"
    runuser -u postgres -- "$pgbin/initdb" -D "$work/pg" -A trust -U postgres >/dev/null
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" \
        -o "-p $1 -k $work -c max_connections=200" start >/dev/null
    wait_port "$1"
}

stop_pg() {
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$work/pg" -m fast stop >/dev/null 2>&1 || true
}

psql() { runuser -u postgres -- "$pgbin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -qAt "$@"; }
