#!/usr/bin/env bash
# Makes sure the Redis and MariaDB that flashgrab's dev server and tests talk to answer on
# 127.0.0.1, in this order of preference:
#   1. something already answers on the port            -> use it as it is;
#   2. the servers are installed but not running         -> start throwaway instances whose
#      data lives under $FLASHGRAB_SERVICES_DIR and dies with `stop`;
#   3. not installed                                     -> as root, apt-get install them;
#      otherwise say which packages to install and fail.
# A MariaDB that answers but refuses root with an empty password over TCP (Debian's default:
# root may only log in through the unix socket) is switched to also accept that, when we can
# reach it as root through its socket; otherwise we explain the one statement to run.
#
# Usage: services.sh [ensure|cluster|status|stop|help]     (ensure is the default)
#
# It is shared by `make run`, `make test` and .ci/run, and it is idempotent: running `ensure`
# twice starts nothing the second time.
set -euo pipefail

readonly PROG=${0##*/}

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$PROG" "$*" >&2
	exit 1
}

usage() {
	cat <<'EOF'
Usage: .ci/services.sh [ensure|cluster|status|stop|help]

  ensure  make Redis and MariaDB answer on 127.0.0.1 (default)
  cluster make a local 3-master Redis Cluster answer (no replicas, AOF,
          cluster-require-full-coverage no) and print one seed address on stdout: give it
          to serve as FLASHGRAB_REDIS_ADDRS, to the tests as FLASHGRAB_TEST_CLUSTER
  status  show what answers on the configured ports and which throwaway instances run
  stop    stop the throwaway instances this script started (never a system service)

Environment:
  FLASHGRAB_REDIS_PORT     Redis port      (default: from FLASHGRAB_REDIS_ADDRS, else 6379)
  FLASHGRAB_MYSQL_PORT     MariaDB port    (default: from FLASHGRAB_MYSQL_DSN, else 3306)
  FLASHGRAB_REDIS_ADDRS    several addresses or a non-local one: Redis is not managed here
  FLASHGRAB_MYSQL_DSN      user, password and database are taken from it; a non-local or
                           unix-socket address: MariaDB is not managed here
  FLASHGRAB_MYSQL_SOCKET   socket of an already running MariaDB, used to repair root's login
  FLASHGRAB_MYSQL_FIX_ROOT 1 (default): repair root's TCP login as above; 0: only explain
  FLASHGRAB_SERVICES_DIR   where throwaway instances live (default ${TMPDIR:-/tmp}/flashgrab-services-$UID)
  FLASHGRAB_SERVICES_WAIT  seconds to wait for a started server to answer (default 60)
  FLASHGRAB_CLUSTER_PORT   first of the cluster's three ports (default 7001: 7001-7003)
EOF
}

# ---------------------------------------------------------------------------------------------
# Configuration: ports come from the same variables the Go code reads, so `make` and the
# binary cannot disagree about where the services are.

REDIS_MANAGED=1
MYSQL_MANAGED=1
MYSQL_USER=root
MYSQL_PASS=
MYSQL_DB=flashgrab

is_local_host() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == '[::1]' || $1 == ::1 ]]; }

is_port() { [[ $1 =~ ^[0-9]+$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535)); }

configure() {
	local addrs=${FLASHGRAB_REDIS_ADDRS:-} dsn=${FLASHGRAB_MYSQL_DSN:-}

	REDIS_PORT=6379
	if [[ -n $addrs ]]; then
		if [[ $addrs == *,* ]]; then
			REDIS_MANAGED=0
		elif [[ $addrs =~ ^(.*):([0-9]+)$ ]] && is_local_host "${BASH_REMATCH[1]}"; then
			REDIS_PORT=${BASH_REMATCH[2]}
		else
			REDIS_MANAGED=0
		fi
	fi
	if [[ -n ${FLASHGRAB_REDIS_PORT:-} ]]; then
		REDIS_PORT=$FLASHGRAB_REDIS_PORT
		REDIS_MANAGED=1
	fi
	is_port "$REDIS_PORT" || die "FLASHGRAB_REDIS_PORT=$REDIS_PORT is not a port number"

	# go-sql-driver DSN: [user[:password]@][net[(addr)]]/dbname[?params]; the password may
	# itself contain '@', so the credentials end at the last '@' before the address.
	MYSQL_PORT=3306
	if [[ -n $dsn ]]; then
		local creds='' net=tcp addr=127.0.0.1:3306 rest
		local with_creds='^(.*)@([a-z0-9]*)(\(([^)]*)\))?/(.*)$' bare='^([a-z0-9]*)(\(([^)]*)\))?/(.*)$'
		if [[ $dsn =~ $with_creds ]]; then
			creds=${BASH_REMATCH[1]} net=${BASH_REMATCH[2]:-tcp} addr=${BASH_REMATCH[4]:-127.0.0.1:3306} rest=${BASH_REMATCH[5]}
		elif [[ $dsn =~ $bare ]]; then
			net=${BASH_REMATCH[1]:-tcp} addr=${BASH_REMATCH[3]:-127.0.0.1:3306} rest=${BASH_REMATCH[4]}
		else
			die "cannot read FLASHGRAB_MYSQL_DSN (expected user[:password]@tcp(host:port)/dbname?params)"
		fi
		if [[ -n $creds ]]; then
			MYSQL_USER=${creds%%:*}
			[[ $creds == *:* ]] && MYSQL_PASS=${creds#*:}
		fi
		MYSQL_DB=${rest%%\?*}
		if [[ $net != tcp ]]; then
			MYSQL_MANAGED=0
		elif [[ $addr =~ ^(.*):([0-9]+)$ ]] && is_local_host "${BASH_REMATCH[1]}"; then
			MYSQL_PORT=${BASH_REMATCH[2]}
		elif is_local_host "$addr"; then
			MYSQL_PORT=3306
		else
			MYSQL_MANAGED=0
		fi
	fi
	if [[ -n ${FLASHGRAB_MYSQL_PORT:-} ]]; then
		MYSQL_PORT=$FLASHGRAB_MYSQL_PORT
		MYSQL_MANAGED=1
	fi
	is_port "$MYSQL_PORT" || die "FLASHGRAB_MYSQL_PORT=$MYSQL_PORT is not a port number"
	[[ $MYSQL_DB =~ ^[A-Za-z0-9_]*$ ]] || die "database name '$MYSQL_DB' in FLASHGRAB_MYSQL_DSN is not a plain identifier"

	CLUSTER_PORT=${FLASHGRAB_CLUSTER_PORT:-7001}
	is_port "$CLUSTER_PORT" && is_port $((10#$CLUSTER_PORT + 2)) || die "FLASHGRAB_CLUSTER_PORT=$CLUSTER_PORT is not a port number"

	SERVICES_DIR=${FLASHGRAB_SERVICES_DIR:-${TMPDIR:-/tmp}/flashgrab-services-$(id -u)}
	WAIT=${FLASHGRAB_SERVICES_WAIT:-60}
	[[ $WAIT =~ ^[0-9]+$ ]] || die "FLASHGRAB_SERVICES_WAIT=$WAIT is not a number of seconds"
}

# The services directory is predictable, so on a shared /tmp make sure nobody else planted it.
services_dir() {
	if [[ ! -e $SERVICES_DIR ]]; then
		if ! { mkdir -p "$SERVICES_DIR" && chmod 700 "$SERVICES_DIR"; }; then
			die "cannot create $SERVICES_DIR"
		fi
	fi
	[[ -d $SERVICES_DIR && ! -L $SERVICES_DIR && -O $SERVICES_DIR ]] ||
		die "$SERVICES_DIR is not a directory owned by $(id -un); remove it or set FLASHGRAB_SERVICES_DIR"
}

# ---------------------------------------------------------------------------------------------
# Finding programs. Debian puts the servers in /usr/sbin, which is not on a normal user's PATH.

find_prog() {
	local name dir
	for name in "$@"; do
		if command -v "$name" >/dev/null 2>&1; then
			command -v "$name"
			return 0
		fi
		for dir in /usr/sbin /usr/local/sbin /usr/local/bin /usr/local/mysql/bin; do
			if [[ -x $dir/$name ]]; then
				printf '%s\n' "$dir/$name"
				return 0
			fi
		done
	done
	return 1
}

# ---------------------------------------------------------------------------------------------
# Probes. Each is bounded by `timeout` so a half-open port cannot hang `make`.

# The inner scripts are single-quoted on purpose: the port arrives as their $1, not by splicing.
# shellcheck disable=SC2016
port_open() {
	timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# redis_reply PORT prints the first line Redis answers to PING (+PONG, -NOAUTH ..., ...).
# It speaks RESP over bash's /dev/tcp, so checking needs no redis-cli.
# shellcheck disable=SC2016
redis_reply() {
	local out
	out=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "PING\r\n" >&3
		IFS= read -r -t 2 line <&3 || exit 1
		printf "%s" "$line"' _ "$1" 2>/dev/null) || return 1
	printf '%s' "${out%$'\r'}"
}

redis_ok() { [[ $(redis_reply "$1" || true) == +PONG ]]; }

mysql_client() {
	MYSQL=$(find_prog mariadb mysql) || return 1
}

# mysql_tcp ARGS... runs the client as the DSN's user against 127.0.0.1:$MYSQL_PORT, ignoring
# option files so that we test exactly what the Go driver will do.
mysql_tcp() {
	local env=()
	[[ -n $MYSQL_PASS ]] && env=(MYSQL_PWD="$MYSQL_PASS")
	env "${env[@]}" timeout 15 "$MYSQL" --no-defaults --protocol=tcp -h 127.0.0.1 -P "$MYSQL_PORT" \
		-u "$MYSQL_USER" --connect-timeout=5 "$@"
}

# ---------------------------------------------------------------------------------------------
# Throwaway instances. Each lives in $SERVICES_DIR/<kind>-<port>/ with a pid file; both servers
# chdir into that directory, which is how `stop` tells our process from a recycled pid.

instance_pid() {
	local dir=$1 pidfile=$2 pid
	[[ -f $pidfile ]] || return 1
	pid=$(<"$pidfile") || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	local cwd
	cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
	[[ $cwd == "$dir" || $cwd == "$dir"/* ]] || return 1
	printf '%s\n' "$pid"
}

# throwaway_note KIND PORT PIDFILE says so when what answers is our own throwaway instance.
throwaway_note() {
	local dir=$SERVICES_DIR/$1-$2
	if instance_pid "$dir" "$dir/$3" >/dev/null; then
		printf ' (the throwaway instance in %s; make stop-services stops it)' "$dir"
	fi
}

# wait_until SECONDS PID DESCRIPTION COMMAND... polls COMMAND until it succeeds, failing early
# when the server process PID (if given) has died.
wait_until() {
	local secs=$1 pid=$2 what=$3
	shift 3
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
			log "$what exited while starting"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log "$what did not answer within ${secs}s"
			return 1
		fi
		sleep 0.2
	done
}

start_redis() {
	local server dir pid
	server=$(find_prog redis-server) || die "redis-server vanished after the install check"
	services_dir
	dir=$SERVICES_DIR/redis-$REDIS_PORT
	mkdir -p "$dir"
	# --daemonize detaches it from make's process group, so Ctrl-C on `make run` leaves it up.
	# AOF with appendfsync always and lazy frees, as deploy/redis/flashgrab.conf: `serve --durability aof`
	# holds against it, and the dev set-up behaves (and performs) like the durable one.
	"$server" --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" \
		--save '' --appendonly yes --appendfsync always --lazyfree-lazy-expire yes --lazyfree-lazy-user-del yes \
		--pidfile "$dir/redis.pid" --logfile "$dir/redis.log" ||
		die "redis-server failed to start on port $REDIS_PORT; see $dir/redis.log"
	if ! wait_until 10 "" "redis-server on 127.0.0.1:$REDIS_PORT" redis_ok "$REDIS_PORT"; then
		tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
		die "throwaway Redis did not come up; log: $dir/redis.log"
	fi
	pid=$(instance_pid "$dir" "$dir/redis.pid" || echo '?')
	log "redis: started a throwaway Redis on 127.0.0.1:$REDIS_PORT (pid $pid, AOF with appendfsync always, files in $dir)"
	STARTED+=("redis")
}

# mysql_socket_path DIR picks a socket path short enough for sun_path (108 bytes).
mysql_socket_path() {
	local sock=$1/mysql.sock
	if ((${#sock} > 100)); then
		sock=/tmp/flashgrab-$(id -u)-$MYSQL_PORT.sock
	fi
	printf '%s\n' "$sock"
}

start_mariadb() {
	local server installdb admin dir sock pid user
	server=$(find_prog mariadbd mysqld) || die "mariadbd vanished after the install check"
	installdb=$(find_prog mariadb-install-db mysql_install_db) || die "mariadb-install-db not found"
	admin=$(find_prog mariadb-admin mysqladmin) || die "mariadb-admin not found"
	services_dir
	dir=$SERVICES_DIR/mariadb-$MYSQL_PORT
	sock=$(mysql_socket_path "$dir")
	user=$(id -un)
	mkdir -p "$dir"

	# A data directory without the marker is from an interrupted install: start it afresh.
	if [[ ! -f $dir/installed ]]; then
		rm -rf "$dir/db"
		log "mysql: initialising a throwaway MariaDB data directory in $dir/db"
		# --no-defaults: the system's /etc/mysql/my.cnf names the system pid file, socket and
		# log, which a second server must not touch.
		if ! "$installdb" --no-defaults --datadir="$dir/db" --user="$user" \
			--auth-root-authentication-method=normal --skip-test-db \
			>"$dir/install.log" 2>&1; then
			tail -n 20 "$dir/install.log" >&2 || true
			die "mariadb-install-db failed; log: $dir/install.log"
		fi
		touch "$dir/installed"
	fi

	# setsid: its own session, so Ctrl-C on `make run` does not reach it. No job control here,
	# so the background child is not a group leader and setsid execs in place: $! is mariadbd.
	setsid "$server" --no-defaults --datadir="$dir/db" --socket="$sock" \
		--port="$MYSQL_PORT" --bind-address=127.0.0.1 --user="$user" \
		--pid-file="$dir/mariadb.pid" --log-error="$dir/mariadb.err" \
		--character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
		--max-connections=500 --skip-log-bin \
		</dev/null >"$dir/mariadbd.out" 2>&1 &
	pid=$!
	if ! wait_until "$WAIT" "$pid" "mariadbd on 127.0.0.1:$MYSQL_PORT" \
		timeout 5 "$admin" --no-defaults --protocol=tcp -h 127.0.0.1 -P "$MYSQL_PORT" -u root \
		--connect-timeout=2 ping; then
		tail -n 20 "$dir/mariadb.err" >&2 2>/dev/null || true
		kill "$pid" 2>/dev/null || true
		die "throwaway MariaDB did not come up; log: $dir/mariadb.err"
	fi
	log "mysql: started a throwaway MariaDB on 127.0.0.1:$MYSQL_PORT (pid $pid, socket $sock, files in $dir)"
	STARTED+=("mysql")
}

stop_instances() {
	local dir kind pidfile pid deadline stopped=0
	[[ -d $SERVICES_DIR ]] || {
		log "no throwaway instances (no $SERVICES_DIR)"
		return 0
	}
	for dir in "$SERVICES_DIR"/redis-* "$SERVICES_DIR"/mariadb-*; do
		[[ -d $dir ]] || continue
		kind=${dir##*/}
		case $kind in
		redis-*) pidfile=$dir/redis.pid ;;
		*) pidfile=$dir/mariadb.pid ;;
		esac
		if pid=$(instance_pid "$dir" "$pidfile"); then
			kill -TERM "$pid"
			# MariaDB flushes InnoDB on TERM; give it time, then insist.
			deadline=$((SECONDS + 30))
			while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
			if kill -0 "$pid" 2>/dev/null; then
				log "$kind (pid $pid) ignored TERM for 30s; killing it"
				kill -KILL "$pid" 2>/dev/null || true
			fi
			log "stopped throwaway $kind (pid $pid)"
			stopped=$((stopped + 1))
		fi
		rm -rf "$dir"
		[[ $kind == mariadb-* ]] && rm -f "/tmp/flashgrab-$(id -u)-${kind#mariadb-}.sock"
	done
	rmdir "$SERVICES_DIR" 2>/dev/null || true
	((stopped > 0)) || log "no throwaway instance was running"
}

# ---------------------------------------------------------------------------------------------
# Installation.

# missing_packages prints the Debian packages needed for what does not answer yet.
missing_packages() {
	local pkgs=()
	if ((REDIS_MANAGED)) && ! port_open "$REDIS_PORT" && ! find_prog redis-server >/dev/null; then
		pkgs+=(redis-server)
	fi
	if ((MYSQL_MANAGED)); then
		if ! port_open "$MYSQL_PORT" &&
			! { find_prog mariadbd mysqld && find_prog mariadb-install-db mysql_install_db; } >/dev/null; then
			pkgs+=(mariadb-server)
		fi
		# The client checks root's login and creates the database, also for a running server.
		if ! find_prog mariadb mysql >/dev/null || ! find_prog mariadb-admin mysqladmin >/dev/null; then
			[[ " ${pkgs[*]-} " == *" mariadb-server "* ]] || pkgs+=(mariadb-client)
		fi
	fi
	printf '%s\n' "${pkgs[@]-}"
}

install_missing() {
	local pkgs
	mapfile -t pkgs < <(missing_packages | sed '/^$/d')
	((${#pkgs[@]} > 0)) || return 0
	if [[ $(id -u) != 0 ]]; then
		log "these Debian packages are missing: ${pkgs[*]}"
		log "install them, then run this again:"
		log "    sudo apt-get install -y ${pkgs[*]}"
		exit 1
	fi
	command -v apt-get >/dev/null || die "missing ${pkgs[*]}, and this is not a Debian-like system: install them by hand"
	log "installing ${pkgs[*]} with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q || die "apt-get update failed"
	apt-get install -y -q --no-install-recommends "${pkgs[@]}" || die "apt-get install ${pkgs[*]} failed"
}

# ---------------------------------------------------------------------------------------------
# Redis.

ensure_redis() {
	local reply
	if ((!REDIS_MANAGED)); then
		log "redis: FLASHGRAB_REDIS_ADDRS=$FLASHGRAB_REDIS_ADDRS is not one local address; not managed here"
		return 0
	fi
	if port_open "$REDIS_PORT"; then
		reply=$(redis_reply "$REDIS_PORT" || true)
		[[ $reply == +PONG ]] ||
			die "something listens on 127.0.0.1:$REDIS_PORT but does not answer PING like an open Redis (reply: '${reply:-nothing}'); free the port or set FLASHGRAB_REDIS_PORT"
		log "redis: using the Redis already answering on 127.0.0.1:$REDIS_PORT$(throwaway_note redis "$REDIS_PORT" redis.pid)"
		return 0
	fi
	start_redis
}

# ---------------------------------------------------------------------------------------------
# Redis Cluster: three masters on $CLUSTER_PORT.. +2, each a throwaway instance like the Redis
# above (so `stop` stops them), with the settings flashgrab expects of a cluster
# (deploy/redis/flashgrab-cluster.conf): AOF, and cluster-require-full-coverage no, so that the
# masters still up keep serving their partitions while one is down.

cluster_info() { timeout 5 "$REDIS_CLI" -p "$1" "${@:2}" 2>/dev/null | tr -d '\r'; }

cluster_ok() { [[ $(cluster_info "$1" cluster info) == *cluster_state:ok* ]]; }

cmd_cluster() {
	local server port dir pid seed
	local -a ports=() addrs=()
	server=$(find_prog redis-server) || die "redis-server is not installed (apt-get install redis-server)"
	REDIS_CLI=$(find_prog redis-cli) || die "redis-cli is not installed (apt-get install redis-tools)"
	for port in "$CLUSTER_PORT" $((10#$CLUSTER_PORT + 1)) $((10#$CLUSTER_PORT + 2)); do
		ports+=("$port")
		addrs+=("127.0.0.1:$port")
		if port_open "$port"; then
			[[ $(cluster_info "$port" info cluster) == *cluster_enabled:1* ]] ||
				die "127.0.0.1:$port answers but is not a Redis Cluster node; free it or set FLASHGRAB_CLUSTER_PORT"
			continue
		fi
		services_dir
		dir=$SERVICES_DIR/redis-$port
		mkdir -p "$dir"
		"$server" --daemonize yes --bind 127.0.0.1 --port "$port" --dir "$dir" \
			--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
			--cluster-require-full-coverage no \
			--save '' --appendonly yes --appendfsync always --lazyfree-lazy-expire yes --lazyfree-lazy-user-del yes \
			--pidfile "$dir/redis.pid" --logfile "$dir/redis.log" ||
			die "redis-server failed to start on port $port; see $dir/redis.log"
		if ! wait_until 10 "" "redis-server on 127.0.0.1:$port" redis_ok "$port"; then
			tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
			die "cluster node did not come up; log: $dir/redis.log"
		fi
		pid=$(instance_pid "$dir" "$dir/redis.pid" || echo '?')
		log "redis cluster: started node 127.0.0.1:$port (pid $pid, files in $dir)"
	done
	seed=${addrs[0]}
	if ! cluster_ok "${ports[0]}"; then
		# Fresh nodes hold no slots: give each a third and introduce them. Nodes that
		# already hold slots but are not ok are a cluster this script cannot repair.
		"$REDIS_CLI" --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes >&2 ||
			die "redis-cli --cluster create ${addrs[*]} failed (a half-made cluster? make stop-services, then again)"
		wait_until 30 "" "the cluster on ${addrs[*]}" cluster_ok "${ports[0]}" ||
			die "the cluster on ${addrs[*]} did not reach cluster_state:ok"
	fi
	log "redis cluster: 3 masters on ${addrs[*]} answer; one seed address is enough:"
	log "    FLASHGRAB_REDIS_ADDRS=$seed"
	printf '%s\n' "$seed"
}

# ---------------------------------------------------------------------------------------------
# MariaDB.

# socket_candidates prints unix sockets that may belong to the server on $MYSQL_PORT.
socket_candidates() {
	local sock
	[[ -n ${FLASHGRAB_MYSQL_SOCKET:-} ]] && printf '%s\n' "$FLASHGRAB_MYSQL_SOCKET"
	if command -v my_print_defaults >/dev/null 2>&1; then
		my_print_defaults mysqld mariadb server client-server 2>/dev/null |
			sed -n 's/^--socket=//p' || true
	fi
	printf '%s\n' /run/mysqld/mysqld.sock /var/run/mysqld/mysqld.sock /tmp/mysql.sock \
		"$(mysql_socket_path "$SERVICES_DIR/mariadb-$MYSQL_PORT")"
}

# root_via_socket sets ROOT_CMD to a client command that reaches the server on $MYSQL_PORT as
# MariaDB root through its unix socket. unix_socket auth maps the OS user to the MariaDB user,
# so a user other than root needs passwordless sudo.
root_via_socket() {
	local sock port
	local -a prefix=()
	if [[ $(id -u) != 0 ]]; then
		command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null || return 1
		prefix=(sudo -n)
	fi
	while IFS= read -r sock; do
		[[ -S $sock ]] || continue
		ROOT_CMD=("${prefix[@]}" timeout 15 "$MYSQL" --no-defaults --protocol=socket -S "$sock" -u root)
		port=$("${ROOT_CMD[@]}" -N -B -e 'SELECT @@port' 2>/dev/null) || continue
		# The socket must belong to the server on our port, not to some other instance.
		[[ $port == "$MYSQL_PORT" ]] && return 0
	done < <(socket_candidates | awk 'NF && !seen[$0]++')
	return 1
}

explain_root_fix() {
	cat >&2 <<EOF

MariaDB on 127.0.0.1:$MYSQL_PORT answers, but refuses ${MYSQL_USER} with the DSN's password over TCP.
A stock Debian MariaDB lets root in only through the unix socket. For a development machine,
let root also log in with an empty password (MariaDB 10.4+):

    sudo mariadb -e "ALTER USER root@localhost IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')"

If the server runs with skip-name-resolve, TCP logins come from root@127.0.0.1 instead:

    sudo mariadb -e "CREATE USER IF NOT EXISTS root@127.0.0.1; ALTER USER root@127.0.0.1 IDENTIFIED VIA mysql_native_password USING PASSWORD(''); GRANT ALL PRIVILEGES ON *.* TO root@127.0.0.1 WITH GRANT OPTION"

Or point flashgrab at an account that works: FLASHGRAB_MYSQL_DSN='user:password@tcp(127.0.0.1:$MYSQL_PORT)/$MYSQL_DB?parseTime=true'

EOF
}

# fix_root_login lets MariaDB root log in over TCP with an empty password, keeping socket auth.
fix_root_login() {
	local snr sql
	if [[ $MYSQL_USER != root || -n $MYSQL_PASS || ${FLASHGRAB_MYSQL_FIX_ROOT:-1} == 0 ]]; then
		explain_root_fix
		return 1
	fi
	if ! root_via_socket; then
		log "mysql: cannot reach MariaDB root through a unix socket of the server on port $MYSQL_PORT (set FLASHGRAB_MYSQL_SOCKET if it lives elsewhere)"
		explain_root_fix
		return 1
	fi
	log "mysql: root may not log in over TCP; letting root@localhost also use an empty password (dev set-up)"
	"${ROOT_CMD[@]}" -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')" ||
		return 1
	# With skip-name-resolve, 127.0.0.1 does not match 'localhost', so TCP needs its own account.
	snr=$("${ROOT_CMD[@]}" -N -B -e 'SELECT @@skip_name_resolve') || return 1
	if [[ $snr == 1 ]]; then
		log "mysql: the server skips name resolution; giving root@127.0.0.1 the same empty-password login"
		sql="CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';"
		sql+=" ALTER USER 'root'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('');"
		sql+=" GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
		"${ROOT_CMD[@]}" -e "$sql" || return 1
	fi
}

ensure_mysql() {
	local err
	if ((!MYSQL_MANAGED)); then
		log "mysql: FLASHGRAB_MYSQL_DSN does not point at 127.0.0.1 over TCP; not managed here"
		return 0
	fi
	mysql_client || die "no mariadb/mysql client found"
	if port_open "$MYSQL_PORT"; then
		log "mysql: using the MariaDB already answering on 127.0.0.1:$MYSQL_PORT$(throwaway_note mariadb "$MYSQL_PORT" mariadb.pid)"
	else
		start_mariadb
	fi

	if ! err=$(mysql_tcp -e 'SELECT 1' 2>&1 >/dev/null); then
		# 1045 Access denied: wrong auth for the account; 1130 not allowed: no account for
		# 127.0.0.1 at all (skip-name-resolve with only root@localhost). Both are ours to repair.
		if [[ $err != *"Access denied"* && $err != *"is not allowed to connect"* ]]; then
			die "127.0.0.1:$MYSQL_PORT answers but not as a usable MariaDB/MySQL: $err"
		fi
		fix_root_login || die "cannot log in to MariaDB on 127.0.0.1:$MYSQL_PORT as $MYSQL_USER: $err"
		err=$(mysql_tcp -e 'SELECT 1' 2>&1 >/dev/null) ||
			die "MariaDB root still cannot log in over TCP after the repair: $err"
		log "mysql: root now logs in over TCP with an empty password"
	fi

	# `serve` creates the schema but connects to the DSN's database, so that must exist.
	if [[ -n $MYSQL_DB ]]; then
		err=$(mysql_tcp -e "CREATE DATABASE IF NOT EXISTS \`$MYSQL_DB\` CHARACTER SET utf8mb4" 2>&1 >/dev/null) ||
			die "cannot create database $MYSQL_DB on 127.0.0.1:$MYSQL_PORT: $err"
	fi
}

# ---------------------------------------------------------------------------------------------

cmd_ensure() {
	STARTED=()
	install_missing
	ensure_redis
	ensure_mysql
	if ((${#STARTED[@]} > 0)); then
		local how="make stop-services        (or: bash .ci/services.sh stop)"
		if [[ -n ${FLASHGRAB_SERVICES_DIR:-} ]]; then
			how="FLASHGRAB_SERVICES_DIR=$SERVICES_DIR make stop-services"
		fi
		log "throwaway instances (${STARTED[*]}) keep running in the background; stop them with"
		log "    $how"
	fi
}

cmd_status() {
	local dir kind pidfile pid
	if ((REDIS_MANAGED)); then
		if redis_ok "$REDIS_PORT"; then log "redis: 127.0.0.1:$REDIS_PORT answers"; else log "redis: 127.0.0.1:$REDIS_PORT does not answer"; fi
	fi
	if ((MYSQL_MANAGED)); then
		if port_open "$MYSQL_PORT"; then log "mysql: 127.0.0.1:$MYSQL_PORT answers"; else log "mysql: 127.0.0.1:$MYSQL_PORT does not answer"; fi
	fi
	for dir in "$SERVICES_DIR"/redis-* "$SERVICES_DIR"/mariadb-*; do
		[[ -d $dir ]] || continue
		kind=${dir##*/}
		case $kind in redis-*) pidfile=$dir/redis.pid ;; *) pidfile=$dir/mariadb.pid ;; esac
		if pid=$(instance_pid "$dir" "$pidfile"); then
			log "throwaway $kind: running (pid $pid) in $dir"
		else
			log "throwaway $kind: not running (leftover files in $dir)"
		fi
	done
}

main() {
	configure
	case ${1:-ensure} in
	ensure) cmd_ensure ;;
	cluster) cmd_cluster ;;
	status) cmd_status ;;
	stop) stop_instances ;;
	help | -h | --help) usage ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
