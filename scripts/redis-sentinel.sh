#!/usr/bin/env bash
# A Redis primary, one replica and three Sentinels on loopback, for the
# failover tests (and for trying WF_REDIS_SENTINELS by hand).
#
#   scripts/redis-sentinel.sh start DIR PORT   # primary PORT, replica PORT+1,
#                                              # Sentinels PORT+2..PORT+4
#   scripts/redis-sentinel.sh stop DIR
#
# `start` waits until the replica is in sync and every Sentinel knows the
# primary (master name `wfmaster`), then prints the settings to use:
#   WF_REDIS_SENTINELS=127.0.0.1:PORT+2,127.0.0.1:PORT+3,127.0.0.1:PORT+4
#   WF_REDIS_SENTINEL_MASTER=wfmaster
# Everything lives in DIR (configs, pid files, logs); `stop` kills what DIR's
# pid files name and deletes DIR. Sentinels mark the primary down after 1 s
# without an answer, so a failover takes a few seconds. Needs redis-server
# (its --sentinel mode); exits 3 when it is missing.
set -euo pipefail

MASTER=wfmaster
say() { echo "[redis-sentinel] $*" >&2; }

start() {
  local dir=$1 port=$2
  command -v redis-server >/dev/null 2>&1 || { say "redis-server not found"; exit 3; }
  mkdir -p "$dir"
  local primary=$port replica=$((port + 1))
  for p in "$primary" "$replica"; do
    local extra=()
    [[ $p == "$replica" ]] && extra=(--replicaof 127.0.0.1 "$primary")
    redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no \
      --dir "$dir" --dbfilename "dump-$p.rdb" --daemonize yes \
      --pidfile "$dir/redis-$p.pid" --logfile "$dir/redis-$p.log" "${extra[@]}"
  done
  local sentinels=()
  for i in 2 3 4; do
    local s=$((port + i))
    cat >"$dir/sentinel-$s.conf" <<EOF
port $s
bind 127.0.0.1
daemonize yes
pidfile $dir/sentinel-$s.pid
logfile $dir/sentinel-$s.log
dir $dir
sentinel monitor $MASTER 127.0.0.1 $primary 2
sentinel down-after-milliseconds $MASTER 1000
sentinel failover-timeout $MASTER 5000
sentinel parallel-syncs $MASTER 1
EOF
    redis-server "$dir/sentinel-$s.conf" --sentinel
    sentinels+=("127.0.0.1:$s")
  done
  local deadline=$((SECONDS + 30))
  until redis-cli -p "$replica" info replication 2>/dev/null | grep -q "master_link_status:up"; do
    ((SECONDS < deadline)) || { say "the replica did not sync within 30 s"; exit 1; }
    sleep 0.2
  done
  for i in 2 3 4; do
    until [[ $(redis-cli -p $((port + i)) sentinel get-master-addr-by-name "$MASTER" 2>/dev/null | tail -1) == "$primary" ]] &&
      [[ $(redis-cli -p $((port + i)) sentinel sentinels "$MASTER" 2>/dev/null | grep -c '^name$') -ge 2 ]]; do
      ((SECONDS < deadline)) || { say "Sentinel $((port + i)) did not see the primary and its peers within 30 s"; exit 1; }
      sleep 0.2
    done
  done
  say "primary 127.0.0.1:$primary, replica 127.0.0.1:$replica, Sentinels ${sentinels[*]}"
  local IFS=,
  echo "WF_REDIS_SENTINELS=${sentinels[*]}"
  echo "WF_REDIS_SENTINEL_MASTER=$MASTER"
}

stop() {
  local dir=$1
  [[ -d $dir ]] || return 0
  for pidfile in "$dir"/*.pid; do
    [[ -f $pidfile ]] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -rf "$dir"
}

case "${1:-}" in
  start) start "$2" "$3" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
