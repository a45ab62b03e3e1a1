#!/usr/bin/env bash
# Makes RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379) reachable, in
# this order of preference: servers already running; Docker Compose when a
# Docker engine answers; local rabbitmq-server / redis-server; installing them
# with apt-get when running as root on Debian/Ubuntu; else say what to install.
set -euo pipefail

cd "$(dirname "$0")/.."

AMQP_PORT=5672
REDIS_PORT=6379

say() { echo "[services] $*" >&2; }

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name port seconds
  local name=$1 port=$2 deadline=$((SECONDS + $3))
  until listening "$port"; do
    if ((SECONDS >= deadline)); then
      say "$name did not start listening on 127.0.0.1:$port within $3 s"
      return 1
    fi
    sleep 1
  done
  say "$name is up on 127.0.0.1:$port"
}

need() { ! listening "$1"; }

if ! need $AMQP_PORT && ! need $REDIS_PORT; then
  say "using the RabbitMQ and Redis already running"
  exit 0
fi

missing=()
need $AMQP_PORT && missing+=(rabbitmq)
need $REDIS_PORT && missing+=(redis)

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
   && docker compose version >/dev/null 2>&1; then
  say "starting ${missing[*]} with Docker Compose"
  docker compose up -d "${missing[@]}"
  wait_for RabbitMQ $AMQP_PORT 90
  wait_for Redis $REDIS_PORT 30
  exit 0
fi

can_install() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; }
apt_updated=0
install() { # package
  if ((apt_updated == 0)); then
    apt-get update -qq
    apt_updated=1
  fi
  say "installing $1 with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

if need $REDIS_PORT; then
  if ! command -v redis-server >/dev/null 2>&1; then
    if can_install; then install redis-server; else
      say "Redis is not running and redis-server is not installed."
      say "Install Redis 7 (e.g. 'sudo apt-get install redis-server' or 'brew install redis'), or Docker, and retry."
      exit 1
    fi
  fi
  say "starting redis-server"
  mkdir -p /tmp/webhook-fanout-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port $REDIS_PORT \
    --dir /tmp/webhook-fanout-redis --save "" --appendonly no \
    --logfile /tmp/webhook-fanout-redis/redis.log
  wait_for Redis $REDIS_PORT 30
fi

if need $AMQP_PORT; then
  if ! command -v rabbitmq-server >/dev/null 2>&1 && [[ ! -x /usr/sbin/rabbitmq-server ]]; then
    if can_install; then install rabbitmq-server; else
      say "RabbitMQ is not running and rabbitmq-server is not installed."
      say "Install RabbitMQ 3.9+ (e.g. 'sudo apt-get install rabbitmq-server' or 'brew install rabbitmq'), or Docker, and retry."
      exit 1
    fi
  fi
  # The Debian package may have started it already.
  if need $AMQP_PORT; then
    say "starting rabbitmq-server"
    PATH="$PATH:/usr/sbin" rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  wait_for RabbitMQ $AMQP_PORT 120
fi
