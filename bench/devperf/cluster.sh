#!/usr/bin/env bash
# Scale-out of one hot sale over a Redis Cluster (issue 11 item 4), on the 16-core device machine.
# An extension of ../shared/devperf/run.sh, using the same bundle (.devperf/pack/b.tar.xz built
# by ../shared/devperf/pack.sh); copy this file to .devperf/pack/cluster.sh before the run:
#   bash ../shared/devperf/pack.sh && cp bench/devperf/cluster.sh .devperf/pack/
#   device run: command 'bash .devperf/pack/cluster.sh', carry [".devperf/pack"], timeout ~420 s
#
# For M = 1, 2, 4 it starts a Redis Cluster of M masters, each on one core of its own (no replicas,
# cluster-require-full-coverage no), creates one sale with shards = M (each shard on its own master:
# engine/shard.go places them), and drives it with wrk (every request a new purchase attempt):
#   one serve  instance on cores 6-11 (GOMAXPROCS 6), wrk -t4 on cores 12-15;
#   two serve  instances on cores 6-8 and 9-11 (GOMAXPROCS 3 each), one wrk -t2 on each, 12-13 and 14-15.
# Cores: masters 0-3, MariaDB 4-5, serve 6-11, load 12-15. It prints the table
#   masters, grabs/s (one serve), grabs/s (two serves), ratio to one node (one serve)
# and each master's CPU over the run (a shard per master: they should be about equal).
# Everything also goes to $OUT/cluster.txt.
#
# Local smoke test on a small machine (no pinning, short runs, binaries from a directory with
# bin/{flashgrab,mint,redis-server,redis-cli,wrk,mariadbd} and perf/grab.lua, and MariaDB's
# share/mysql and mdb-data.tar as pack.sh makes them):
#   DRY=1 SECS=2 CONNS=32 BDIR=/path/to/b bash bench/devperf/cluster.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee "$OUT/cluster.txt") 2>&1
W=${WORK:-/tmp/fgc}; rm -rf "$W"; mkdir -p "$W"
if [ -n "${BDIR:-}" ]; then B=$BDIR; else tar -C "$W" -xJf .devperf/pack/b.tar.xz; B=$W/b; fi
export LD_LIBRARY_PATH=$B/lib
if [ -n "${DRY:-}" ]; then T() { shift; "$@"; }; else T() { taskset -c "$@"; }; fi
# TB is T for a background job: it execs, so that $! is the process itself (a job running T
# would be a subshell whose kill leaves the server running).
if [ -n "${DRY:-}" ]; then TB() { shift; exec "$@"; }; else TB() { exec taskset -c "$@"; }; fi
SECS=${SECS:-10}; CONNS=${CONNS:-512}; MASTERS=${MASTERS:-"1 2 4"}
MP=${MP:-3316}; AP=${AP:-8090}; RP0=${RP0:-7100}
SECRET=devsecret0123456789abcdef
nproc; uname -r

# ---- MariaDB, once (a fresh database per cluster size) ----
tar -C "$W" -xf "$B/mdb-data.tar"
TB 4-5 "$B/bin/mariadbd" --no-defaults --user=root --datadir="$W/data" --lc-messages-dir="$B/share/mysql" \
  --character-sets-dir="$B/share/mysql/charsets" --bind-address=127.0.0.1 --port=$MP --socket="$W/mysql.sock" \
  --innodb-buffer-pool-size=2G --innodb-flush-log-at-trx-commit=2 --max-connections=500 --skip-log-bin >"$W/mysql.log" 2>&1 &
MDB=$!

admin=$("$B/bin/mint" -secret $SECRET -admin)
"$B/bin/mint" -secret $SECRET -n 20000 -prefix cl > "$W/tokens"
st=$(date -u -d '-1 min' +%Y-%m-%dT%H:%M:%SZ); en=$(date -u -d '+2 hour' +%Y-%m-%dT%H:%M:%SZ)
cpu_redis() { "$B/bin/redis-cli" -p "$1" info cpu | awk -F: '/used_cpu_(user|sys):/{s+=$2} END{printf "%.3f", s}'; }

# start_cluster M: M masters on ports RP0.., core i each, slots split evenly; prints the addresses.
start_cluster() {
  local m=$1 i port per from to addrs=""
  per=$((16384 / m))
  for i in $(seq 0 $((m - 1))); do
    port=$((RP0 + i)); mkdir -p "$W/r$port"
    TB $i "$B/bin/redis-server" --port $port --bind 127.0.0.1 --save "" --appendonly no --dir "$W/r$port" \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-require-full-coverage no \
      --daemonize no >"$W/r$port/log" 2>&1 &
    echo $! >> "$W/redis.pids"
  done
  for i in $(seq 0 $((m - 1))); do
    port=$((RP0 + i))
    for _ in $(seq 80); do "$B/bin/redis-cli" -p $port ping >/dev/null 2>&1 && break; sleep 0.25; done
    from=$((i * per)); to=$(( i == m - 1 ? 16383 : (i + 1) * per - 1 ))
    "$B/bin/redis-cli" -p $port cluster addslotsrange $from $to >/dev/null
    [ $i -gt 0 ] && "$B/bin/redis-cli" -p $port cluster meet 127.0.0.1 $RP0 >/dev/null
    addrs="$addrs${addrs:+,}127.0.0.1:$port"
  done
  for i in $(seq 0 $((m - 1))); do
    port=$((RP0 + i))
    for _ in $(seq 120); do
      info=$("$B/bin/redis-cli" -p $port cluster info)
      echo "$info" | grep -q 'cluster_state:ok' && echo "$info" | grep -q "cluster_known_nodes:$m" && break
      sleep 0.25
    done
  done
  echo "$addrs"
}

stop_cluster() { # the masters were started in a subshell: wait for them by polling
  [ -f "$W/redis.pids" ] && while read -r p; do
    kill "$p" 2>/dev/null; for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done < "$W/redis.pids"
  rm -f "$W/redis.pids"; rm -rf "$W"/r$RP0 "$W"/r$((RP0 + 1)) "$W"/r$((RP0 + 2)) "$W"/r$((RP0 + 3))
}

# start_serve port cores procs: one serve instance on the cluster and database of the round.
start_serve() {
  GOMAXPROCS=$3 FLASHGRAB_JWT_SECRET=$SECRET FLASHGRAB_MYSQL_DSN="root@tcp(127.0.0.1:$MP)/fg_m$M?parseTime=true" \
    FLASHGRAB_REDIS_ADDRS=$ADDRS FLASHGRAB_PARTITIONS=64 FLASHGRAB_DURABILITY=none \
    FLASHGRAB_GRAB_RATE=1000000 FLASHGRAB_GRAB_BURST=1000000 FLASHGRAB_MAX_CONNS_PER_IP=100000 \
    TB $2 "$B/bin/flashgrab" serve --addr 127.0.0.1:$1 >"$W/serve-$M-$1.log" 2>&1 &
  echo $! >> "$W/serve.pids"
  for _ in $(seq 120); do [ "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$1/readyz)" = 200 ] && return 0; sleep 0.5; done
  echo "serve on $1 not ready:"; tail -5 "$W/serve-$M-$1.log"; return 1
}

stop_serve() {
  [ -f "$W/serve.pids" ] && while read -r p; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done < "$W/serve.pids"
  rm -f "$W/serve.pids"
}

mk() { # port id shards
  curl -s -X POST 127.0.0.1:$1/v1/sales -H "Authorization: Bearer $admin" -H 'Content-Type: application/json' \
    -d "{\"id\":\"$2\",\"merchant_id\":\"m\",\"price_cents\":100,\"stock\":1000000000000,\"per_user_limit\":1000000,\"shards\":$3,\"starts_at\":\"$st\",\"ends_at\":\"$en\"}"
}

# drive name cores threads conns port sale: one wrk; prints req/s, writes $W/name.txt.
drive() {
  TOKENS="$W/tokens" GRAB_PATH=/v1/sales/$6/grab T $2 "$B/bin/wrk" -t$3 -c$4 -d${SECS}s --latency \
    -s "$B/perf/grab.lua" http://127.0.0.1:$5 > "$W/$1.txt" 2>&1
  local bad; bad=$(awk '/Non-2xx/{print $5}' "$W/$1.txt")
  [ -n "$bad" ] && echo "   $1: $bad answers were not 200" >&2
  awk '/^Requests\/sec/{print $2}' "$W/$1.txt"
}

declare -A ONE TWO
for M in $MASTERS; do
  ADDRS=$(start_cluster $M | tail -1)
  echo "== $M master(s): $ADDRS"
  cpus0=(); for i in $(seq 0 $((M - 1))); do cpus0+=("$(cpu_redis $((RP0 + i)))"); done
  # one serve instance
  start_serve $AP 6-11 6 || { stop_cluster; continue; }
  echo "   sale: $(mk $AP hot$M $M)"
  ONE[$M]=$(drive one$M 12-15 4 $CONNS $AP hot$M)
  grep -E '^ +(50|99)%' "$W/one$M.txt" | tr -s ' ' | tr '\n' ' ' | sed 's/^/   latency /'; echo
  stop_serve
  # two serve instances on the same cluster and database, the same sale
  start_serve $AP 6-8 3 && start_serve $((AP + 1)) 9-11 3 || { stop_serve; stop_cluster; continue; }
  drive twoA$M 12-13 2 $((CONNS / 2)) $AP hot$M > "$W/twoA$M.rate" &
  DP=$!
  drive twoB$M 14-15 2 $((CONNS / 2)) $((AP + 1)) hot$M > "$W/twoB$M.rate"
  wait $DP
  TWO[$M]=$(awk '{s+=$1} END{printf "%.2f", s}' "$W/twoA$M.rate" "$W/twoB$M.rate")
  echo "   sale after: $(curl -s 127.0.0.1:$AP/v1/sales/hot$M)"
  line="   master CPU seconds over both runs:"
  for i in $(seq 0 $((M - 1))); do
    line="$line $((RP0 + i))=$(awk -v a="${cpus0[$i]}" -v b="$(cpu_redis $((RP0 + i)))" 'BEGIN{printf "%.1f", b-a}')"
  done
  echo "$line"
  stop_serve
  stop_cluster
done
kill $MDB 2>/dev/null; wait $MDB 2>/dev/null

echo
echo "| masters | grabs/s, one serve | grabs/s, two serves | ratio to one node (one serve) | target 0.8 x masters |"
echo "|---|---|---|---|---|"
for M in $MASTERS; do
  base=${ONE[1]:-0}
  echo "| $M | ${ONE[$M]:-failed} | ${TWO[$M]:-failed} | $(awk -v a="${ONE[$M]:-0}" -v b="$base" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }') | $(awk -v m=$M 'BEGIN{printf "%.1f", 0.8*m}') |"
done
echo done
