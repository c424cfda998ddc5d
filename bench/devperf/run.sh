#!/usr/bin/env bash
# Issue 10's device measurement, adapted from ../shared/devperf/run.sh (same core layout, so the
# figures compare with BASELINE.md there): flashgrab's grab path with Redis, MariaDB, the server
# and the load generators on cores of their own, on the 16-core device machine.
# Redis: core 0; MariaDB: 1-3; serve: 4-9; generators: 10-15. Results go to $OUT.
#
#   bash ../shared/devperf/pack.sh     # here: builds .devperf/pack/b.tar.xz from this tree
#   device run: command 'bash bench/devperf/run.sh', carry [".devperf/pack"], timeout ~480 s
#
# Differences from the shared script: serve runs with the abuse limits off
# (--max-conns-per-ip 0 --grab-rate 0: wrk's 256 connections share one address and rotate
# 20,000 users) and --durability none (the default aof wants an fsyncing Redis, measured apart
# by the Go benchmarks' -aof/-replica cases); Redis CPU per grab is counted until the settler
# has drained the streams, so it includes the settler's XREADGROUP, XACK and trimming, and the
# drain time after the load is printed (settle lag).
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
W=/tmp/fg; rm -rf $W; mkdir -p $W; tar -C $W -xJf .devperf/pack/b.tar.xz; B=$W/b
export LD_LIBRARY_PATH=$B/lib
if [ -n "${DRY:-}" ]; then T() { shift; "$@"; }; else T() { taskset -c "$@"; }; fi
RP=${RP:-6379}; MP=${MP:-3306}; AP=${AP:-8080}; D=${DURSCALE:-1}
nproc; uname -r
# ---- services ----
T 0 $B/bin/redis-server --port $RP --bind 127.0.0.1 --save "" --appendonly no --daemonize no --dir $W >$W/redis.log 2>&1 &
tar -C $W -xf $B/mdb-data.tar
T 1-3 $B/bin/mariadbd --no-defaults --user=root --datadir=$W/data --lc-messages-dir=$B/share/mysql \
  --character-sets-dir=$B/share/mysql/charsets --bind-address=127.0.0.1 --port=$MP --socket=$W/mysql.sock \
  --innodb-buffer-pool-size=4G --innodb-flush-log-at-trx-commit=2 --max-connections=500 --skip-log-bin >$W/mysql.log 2>&1 &
for i in $(seq 60); do $B/bin/redis-cli -p $RP ping >/dev/null 2>&1 && break; sleep 0.25; done
SECRET=devsecret0123456789abcdef
export FLASHGRAB_JWT_SECRET=$SECRET FLASHGRAB_MYSQL_DSN="root@tcp(127.0.0.1:$MP)/flashgrab?parseTime=true" FLASHGRAB_REDIS_ADDRS=127.0.0.1:$RP
sleep 3
GOMAXPROCS=6 T 4-9 $B/bin/flashgrab serve --addr 127.0.0.1:$AP --max-conns-per-ip 0 --grab-rate 0 --durability none >$W/serve.log 2>&1 &
SP=$!
sleep 1; SP=$(pgrep -n -f 'bin/flashgrab serve' || echo $SP)
for i in $(seq 120); do [ "$(curl -s -o /dev/null -w '%{http_code}' 127.0.0.1:$AP/readyz)" = 200 ] && break; sleep 0.5; done
curl -s 127.0.0.1:$AP/readyz; echo
tail -3 $W/serve.log; tail -3 $W/mysql.log
cpu_redis() { $B/bin/redis-cli -p $RP info cpu | awk -F: '/used_cpu_(user|sys):/{s+=$2} END{printf "%.3f", s}'; }
cpu_pid() { awk '{printf "%.3f", ($14+$15)/100}' /proc/$1/stat; }
rss_pid() { awk '/VmRSS/{print $2/1024 " MB"}' /proc/$1/status; }
admin=$($B/bin/mint -secret $SECRET -admin)
$B/bin/mint -secret $SECRET -n 20000 -prefix dv > $W/tokens
st=$(date -u -d '-1 min' +%Y-%m-%dT%H:%M:%SZ); en=$(date -u -d '+2 hour' +%Y-%m-%dT%H:%M:%SZ)
mk() { curl -s -o /dev/null -w '%{http_code}' -X POST 127.0.0.1:$AP/v1/sales -H "Authorization: Bearer $admin" \
  -H 'Content-Type: application/json' -d "{\"id\":\"$1\",\"merchant_id\":\"m$1\",\"price_cents\":100,\"stock\":$2,\"per_user_limit\":$3,\"starts_at\":\"$st\",\"ends_at\":\"$en\"}"; }
echo "create: $(mk big 1000000000 1000000) $(mk one 1 1)"
# entries left in the partition streams (not the dead letters): 0 once the settler has read,
# settled and acknowledged everything, since acknowledging trims the settled history.
stream_left() {
  local n=0 k
  for k in $($B/bin/redis-cli -p $RP --scan --pattern '*:events' 2>/dev/null); do n=$((n + $($B/bin/redis-cli -p $RP xlen "$k"))); done
  echo $n
}
# waits (up to 60 s) until the streams are drained; prints the seconds it took
drain() {
  local t0=$(date +%s.%N) i
  for i in $(seq 600); do [ "$(stream_left)" = 0 ] && break; sleep 0.1; done
  awk -v a=$t0 -v b=$(date +%s.%N) 'BEGIN{printf "%.1f", b-a}'
}
wrkrun() { # name path cores conns secs
  $B/bin/redis-cli -p $RP config resetstat >/dev/null
  drain >/dev/null
  local r0=$(cpu_redis) s0=$(cpu_pid $SP)
  TOKENS=$W/tokens GRAB_PATH=$2 T $3 $B/bin/wrk -t6 -c$4 -d$5s --latency -s $B/perf/grab.lua http://127.0.0.1:$AP > $W/$1.txt 2>&1
  # Redis and serve CPU per grab include settling it: read once the streams are drained.
  local lag=$(drain)
  local r1=$(cpu_redis) s1=$(cpu_pid $SP)
  local rate=$(awk '/^Requests\/sec/{print $2}' $W/$1.txt) n=$(awk '/requests in/{print $1}' $W/$1.txt) bad=$(awk '/Non-2xx/{print $5}' $W/$1.txt)
  echo "== $1 c=$4: $rate req/s, n=$n non2xx=${bad:-0}; redis cpu incl. settling $(awk -v a=$r0 -v b=$r1 -v n=$n 'BEGIN{printf "%.1f us/req", (b-a)*1e6/n}'), serve cpu incl. settler $(awk -v a=$s0 -v b=$s1 -v n=$n 'BEGIN{printf "%.1f us/req", (b-a)*1e6/n}'); streams drained ${lag}s after the load"
  grep -E '^ +(50|90|99)%' $W/$1.txt | tr -s ' ' | tr '\n' ' '; echo
  # where Redis spent its time, per request (nested script calls are counted inside evalsha too)
  sleep 1; $B/bin/redis-cli -p $RP info commandstats | awk -F'[:,=]' -v n=$n '/^cmdstat/{sub(/^cmdstat_/, "", $1); printf "%s %.2fus/req (%d calls)\n", $1, $5/n, $3}' | sort -k2 -t' ' -g -r | head -8 | sed 's/^/   redis /'
}
# 1. raw Redis baseline: one EVALSHA per user (decr + SADD + XADD)
sha=$($B/bin/redis-cli -p $RP SCRIPT LOAD "$(cat $B/perf/decr_xadd.lua)"); $B/bin/redis-cli -p $RP SET perf:stock 100000000000 >/dev/null
for P in 1 16; do
  T 10-15 $B/bin/redis-benchmark -p $RP --csv -n $((400000/D)) -c 64 -P $P --threads 4 -r 100000000 EVALSHA $sha 3 perf:stock perf:buyers perf:outbox __rand_int__ 2>/dev/null | tail -1 | sed "s/^/== raw evalsha P=$P: /"
done
$B/bin/redis-cli -p $RP DEL perf:stock perf:buyers perf:outbox >/dev/null
# 2. grabs, ample stock (every request a new attempt), two concurrencies
wrkrun grab256 /v1/sales/big/grab 10-15 256 $((12/D))
wrkrun grab1024 /v1/sales/big/grab 10-15 1024 $((10/D))
echo "sold: $(curl -s 127.0.0.1:$AP/v1/sales/big)"
# 3. sold-out answers, constant handler
wrkrun soldout /v1/sales/one/grab 10-15 256 $((8/D))
GOMAXPROCS=6 T 4-9 $B/bin/hello -addr 127.0.0.1:$((AP+10)) & HP=$!; sleep 0.5
TOKENS=$W/tokens GRAB_PATH=/ T 10-15 $B/bin/wrk -t6 -c256 -d$((8/D))s -s $B/perf/grab.lua http://127.0.0.1:$((AP+10)) | awk '/^Requests\/sec/{print "== constant fasthttp: " $2 " req/s"}'
kill $HP
echo "serve RSS after load: $(rss_pid $SP); goroutines: $(curl -s 127.0.0.1:$AP/metrics | awk '/^go_goroutines/{print $2}')"
summ() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); l=d["latency"]; print("%s %s rate=%s thr=%.0f/s p50=%.2fms p90=%.2fms p99=%.2fms p999=%.2fms max=%.1fms outcomes=%s" % (d["scenario"], d["mode"], d.get("rate"), d["throughput_rps"], l["p50_ns"]/1e6, l["p90_ns"]/1e6, l["p99_ns"]/1e6, l["p999_ns"]/1e6, l["max_ns"]/1e6, [(o["outcome"], o["count"]) for o in d["outcomes"]]))' "$1"; }
# 4. the project's own generator: closed loop, then open loop at half and a quarter of it
L="$B/bin/flashgrab load --url http://127.0.0.1:$AP --secret $SECRET --no-progress"
GOMAXPROCS=6 T 10-15 $L --scenario sale -c 256 -d $((10/D))s --json > $OUT/load_closed.json; max=$(grep -o '"throughput[^,]*' $OUT/load_closed.json | head -1)
echo "== load closed: $(summ $OUT/load_closed.json)"
rate=$(grep -o '"throughput[^,]*' $OUT/load_closed.json | head -1 | grep -o '[0-9.]*$' | cut -d. -f1)
half=$(( ${rate:-20000} / 2 )); quarter=$(( ${rate:-20000} / 4 ))
GOMAXPROCS=6 T 10-15 $L --scenario sale -c 512 -d $((12/D))s --rate $half --json --plot $OUT/open_half.png > $OUT/load_half.json
echo "== open loop half: $(summ $OUT/load_half.json)"
GOMAXPROCS=6 T 10-15 $L --scenario sale -c 512 -d $((8/D))s --rate $quarter --json > $OUT/load_quarter.json
echo "== open loop quarter: $(summ $OUT/load_quarter.json)"
GOMAXPROCS=6 T 10-15 $L --scenario packet -c 256 -d $((8/D))s --json > $OUT/load_packet.json
echo "== packet: $(summ $OUT/load_packet.json)"
# 5. settlement drains, books reconcile
took=$(drain)
echo "stream entries left: $(stream_left) after ${took}s; settled: $(curl -s 127.0.0.1:$AP/metrics | grep -E '^flashgrab_settled_events_total' | tr '\n' ' ')"
T 4-9 $B/bin/flashgrab reconcile 2>&1 | tail -12
echo "serve RSS end: $(rss_pid $SP)"
# 6. the Go benchmarks with 12 cores for client+server
cd $W && FLASHGRAB_TEST_REDIS=127.0.0.1:$RP FLASHGRAB_TEST_MYSQL="root@tcp(127.0.0.1:$MP)/" GOMAXPROCS=12 T 4-15 \
  $B/bin/bench.test -test.run '^$' -test.bench "${BENCHRE:-Grab\$|Settle}" -test.benchtime ${BENCHTIME:-2s} -test.benchmem -test.timeout 5m 2>&1 | grep -E 'Benchmark|ok|FAIL|panic' | cut -c1-400
echo done
