#!/usr/bin/env bash
# A three-node RabbitMQ cluster on loopback, for the cluster fault tests (and
# for trying WF_AMQP_URL with several nodes by hand).
#
#   scripts/rabbitmq-cluster.sh start DIR PORT   # nodes on AMQP ports PORT,
#                                                # PORT+1, PORT+2
#   scripts/rabbitmq-cluster.sh stop DIR
#
# Each node has its own name (wfc<PORT+i>@localhost), AMQP and distribution
# ports, configuration file (the machine's /etc/rabbitmq/rabbitmq.conf pins
# the listener to 5672), no plugins (their listeners would collide) and data
# folder under DIR, owned by the `rabbitmq` user the server runs as. `start`
# joins nodes 2 and 3 to node 1, waits until all three run, and prints:
#   WF_AMQP_URL=amqp://guest:guest@127.0.0.1:PORT/%2f,...
#   NODES=wfc<PORT>@localhost wfc<PORT+1>@localhost wfc<PORT+2>@localhost
# `stop` kills the nodes' Erlang VMs and deletes DIR. `guest` may log in
# from loopback only, as on any default node. Exits 3 when rabbitmq-server
# or the rabbitmq user is missing. About 15 s and 300 MB on two cores.
set -euo pipefail

say() { echo "[rabbitmq-cluster] $*" >&2; }
BIN=/usr/lib/rabbitmq/bin

ctl() { # node args...
  local node=$1
  shift
  su rabbitmq -s /bin/sh -c "HOME=/var/lib/rabbitmq $BIN/rabbitmqctl -n $node $*"
}

start() {
  local dir=$1 port=$2
  if [[ ! -x $BIN/rabbitmq-server ]] || ! id rabbitmq >/dev/null 2>&1 || [[ $(id -u) -ne 0 ]]; then
    say "needs rabbitmq-server ($BIN), the rabbitmq user and root"
    exit 3
  fi
  mkdir -p "$dir"
  echo "[]." >"$dir/enabled_plugins"
  local urls=() nodes=()
  for i in 0 1 2; do
    local p=$((port + i)) node="wfc$((port + i))@localhost"
    local home="$dir/$node"
    mkdir -p "$home"
    cat >"$home/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$p
loopback_users.guest = true
EOF
    chown -R rabbitmq:rabbitmq "$dir"
    setsid su rabbitmq -s /bin/sh -c "cd '$home' && exec env HOME=/var/lib/rabbitmq \
      RABBITMQ_NODENAME='$node' RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$p \
      RABBITMQ_DIST_PORT=$((p + 10000)) RABBITMQ_CONFIG_FILE='$home/rabbitmq.conf' \
      RABBITMQ_ENABLED_PLUGINS_FILE='$dir/enabled_plugins' RABBITMQ_MNESIA_BASE='$home/mnesia' \
      RABBITMQ_LOG_BASE='$home/log' RABBITMQ_PID_FILE='$home/pid' \
      RABBITMQ_CONF_ENV_FILE='$home/none.conf' \
      $BIN/rabbitmq-server" >"$home/stdout.log" 2>&1 </dev/null &
    urls+=("amqp://guest:guest@127.0.0.1:$p/%2f")
    nodes+=("$node")
  done
  local deadline=$((SECONDS + 90))
  for node in "${nodes[@]}"; do
    until ctl "$node" await_startup --timeout 10 >/dev/null 2>&1; do
      ((SECONDS < deadline)) || { say "$node did not start; see $dir/$node/log"; exit 1; }
      sleep 0.5
    done
  done
  for node in "${nodes[@]:1}"; do
    ctl "$node" stop_app >/dev/null
    ctl "$node" join_cluster "${nodes[0]}" >/dev/null 2>&1
    ctl "$node" start_app >/dev/null
  done
  # Quorum queues declared before every node is fully up get fewer members,
  # and losing one node can then leave them without a majority.
  for node in "${nodes[@]}"; do
    ctl "$node" await_startup --timeout 60 >/dev/null 2>&1 || { say "$node did not start after joining"; exit 1; }
  done
  ctl "${nodes[0]}" await_online_nodes 3 --timeout 60 >/dev/null 2>&1 || { say "the cluster has fewer than 3 online nodes"; exit 1; }
  local running
  running=$(ctl "${nodes[0]}" cluster_status --formatter json | grep -o '"running_nodes":\[[^]]*\]' | grep -o 'wfc' | wc -l)
  [[ $running -eq 3 ]] || { say "only $running of 3 nodes run in the cluster"; exit 1; }
  say "three nodes running: ${nodes[*]}"
  local IFS=,
  echo "WF_AMQP_URL=${urls[*]}"
  IFS=' '
  echo "NODES=${nodes[*]}"
}

stop() {
  local dir=$1
  [[ -d $dir ]] || return 0
  for pidfile in "$dir"/*/pid; do
    [[ -f $pidfile ]] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  done
  # Nodes that never wrote a pid file.
  pkill -9 -f "RABBITMQ_MNESIA_BASE=$dir|-mnesia dir \"$dir" 2>/dev/null || true
  pkill -9 -f "$dir/" 2>/dev/null || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start "$2" "$3" ;;
  stop) stop "$2" ;;
  *) echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
