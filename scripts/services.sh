#!/usr/bin/env bash
# Starts the servers the tests talk to, on loopback, when they are not running already:
#   Redis         127.0.0.1:6379
#   Redis Cluster 127.0.0.1:7000-7005 (three masters, three replicas)
#   moto          127.0.0.1:5005 (DynamoDB emulator, PyPI moto[server], in a virtual environment,
#                 one request at a time: scripts/moto_serial.py)
#   dynalite      127.0.0.1:8005 (DynamoDB emulator, npm dynalite)
# and makes sure a headless Chromium is there for the status page's browser test
# (examples/tests/status_page.rs): Debian's chromium, installed when missing.
# Usage: scripts/services.sh up | down | chromium
# Installs Debian's redis-server and redis-tools, moto and dynalite when they are missing. Fails
# loudly when a service cannot be started.
set -euo pipefail

STATE_DIR="${RATELIMIT_SERVICES_DIR:-/tmp/ratelimit-services}"
CLUSTER_PORTS=(7000 7001 7002 7003 7004 7005)
MOTO_PORT="${MOTO_PORT:-5005}"
DYNALITE_PORT="${DYNALITE_PORT:-8005}"

say() { printf '[services] %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
  say "installing $* with apt-get"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

need_redis_binaries() {
  if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    apt_install redis-server redis-tools
  fi
}

# wait_until SECONDS COMMAND...: retries COMMAND every 0.1 s until it succeeds or time runs out.
wait_until() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

redis_up() {
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    say "redis on 6379: already running"
    return
  fi
  mkdir -p "$STATE_DIR/6379"
  say "redis on 6379: starting"
  redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$STATE_DIR/6379" --logfile "$STATE_DIR/6379/redis.log"
  wait_until 10 sh -c 'redis-cli -p 6379 ping | grep -q PONG' \
    || die "redis on 6379 did not start; see $STATE_DIR/6379/redis.log"
}

cluster_ok() {
  local port
  for port in "${CLUSTER_PORTS[@]}"; do
    redis-cli -p "$port" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || return 1
  done
  # Three masters, each with its replica.
  [ "$(redis-cli -p "${CLUSTER_PORTS[0]}" cluster nodes 2>/dev/null | grep -c master)" -eq 3 ] || return 1
  [ "$(redis-cli -p "${CLUSTER_PORTS[0]}" cluster nodes 2>/dev/null | grep -c slave)" -eq 3 ] || return 1
  ! redis-cli -p "${CLUSTER_PORTS[0]}" cluster nodes 2>/dev/null | grep -q fail
}

cluster_down() {
  local port
  for port in "${CLUSTER_PORTS[@]}"; do
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  for port in "${CLUSTER_PORTS[@]}"; do
    wait_until 5 sh -c "! redis-cli -p $port ping" || die "cluster node $port does not stop"
  done
  rm -rf "$STATE_DIR/cluster"
}

cluster_up() {
  if cluster_ok; then
    say "redis cluster on ${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[5]}: already running"
    return
  fi
  say "redis cluster: (re)creating on ${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[5]}"
  cluster_down
  local port addresses=()
  for port in "${CLUSTER_PORTS[@]}"; do
    local dir="$STATE_DIR/cluster/$port"
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$dir/nodes.conf" --cluster-node-timeout 2000 \
      --save '' --appendonly no --daemonize yes --dir "$dir" --logfile "$dir/redis.log"
    addresses+=("127.0.0.1:$port")
  done
  for port in "${CLUSTER_PORTS[@]}"; do
    wait_until 10 sh -c "redis-cli -p $port ping | grep -q PONG" \
      || die "cluster node $port did not start; see $STATE_DIR/cluster/$port/redis.log"
  done
  redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >"$STATE_DIR/cluster/create.log" 2>&1 \
    || die "redis-cli --cluster create failed; see $STATE_DIR/cluster/create.log"
  wait_until 30 cluster_ok || die "the cluster did not reach cluster_state:ok with 3 masters and 3 replicas"
  say "redis cluster: ok"
}

# listening PORT: whether something accepts connections on 127.0.0.1:PORT.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# An emulator answers DynamoDB's ListTables (the request every SDK sends first) on PORT.
dynamodb_answers() {
  curl -sf -m 2 -X POST "http://127.0.0.1:$1/" \
    -H 'Content-Type: application/x-amz-json-1.0' \
    -H 'X-Amz-Target: DynamoDB_20120810.ListTables' -H 'X-Amz-Date: 20260101T000000Z' \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0' \
    -d '{}' | grep -q TableNames
}

moto_up() {
  if dynamodb_answers "$MOTO_PORT"; then
    say "moto on $MOTO_PORT: already running"
    return
  fi
  listening "$MOTO_PORT" && die "port $MOTO_PORT is taken by something that is not a DynamoDB emulator"
  local venv="$STATE_DIR/moto-venv"
  if [ ! -x "$venv/bin/moto_server" ]; then
    say "moto: installing moto[server] into $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install -q 'moto[server]>=5,<6' >"$STATE_DIR/moto-install.log" 2>&1 \
      || die "pip install moto[server] failed; see $STATE_DIR/moto-install.log"
  fi
  say "moto on $MOTO_PORT: starting"
  # One request at a time: see scripts/moto_serial.py.
  nohup "$venv/bin/python" "$(dirname "$0")/moto_serial.py" 127.0.0.1 "$MOTO_PORT" >"$STATE_DIR/moto.log" 2>&1 &
  wait_until 60 dynamodb_answers "$MOTO_PORT" \
    || die "moto did not start on $MOTO_PORT; see $STATE_DIR/moto.log"
}

dynalite_up() {
  if dynamodb_answers "$DYNALITE_PORT"; then
    say "dynalite on $DYNALITE_PORT: already running"
    return
  fi
  listening "$DYNALITE_PORT" && die "port $DYNALITE_PORT is taken by something that is not a DynamoDB emulator"
  local dir="$STATE_DIR/dynalite"
  if [ ! -f "$dir/node_modules/dynalite/cli.js" ]; then
    command -v npm >/dev/null || apt_install nodejs npm
    say "dynalite: installing with npm into $dir"
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent dynalite@4 >"$STATE_DIR/dynalite-install.log" 2>&1 \
      || die "npm install dynalite failed; see $STATE_DIR/dynalite-install.log"
  fi
  say "dynalite on $DYNALITE_PORT: starting"
  nohup node "$dir/node_modules/dynalite/cli.js" --host 127.0.0.1 --port "$DYNALITE_PORT" \
    >"$STATE_DIR/dynalite.log" 2>&1 &
  wait_until 30 dynamodb_answers "$DYNALITE_PORT" \
    || die "dynalite did not start on $DYNALITE_PORT; see $STATE_DIR/dynalite.log"
}

# The status page's browser test needs a Chromium: Debian's package, installed when none is on the
# PATH. Not fatal where it cannot be installed (no apt-get, not root, no package): the test then
# says it is skipped and why.
chromium_up() {
  local name
  for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null; then
      say "chromium: $(command -v "$name")"
      return 0
    fi
  done
  if ! command -v apt-get >/dev/null; then
    say "WARNING: no Chromium and no apt-get to install it; the status page's browser test will be skipped"
    return 1
  fi
  if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
    say "WARNING: no Chromium, and installing it needs root; the status page's browser test will be skipped"
    return 1
  fi
  mkdir -p "$STATE_DIR"
  if ! (apt_install chromium) >"$STATE_DIR/chromium-install.log" 2>&1; then
    say "WARNING: apt-get install chromium failed (see $STATE_DIR/chromium-install.log); the status page's browser test will be skipped"
    return 1
  fi
  say "chromium: installed $(command -v chromium)"
}

emulators_down() {
  pkill -f "moto_serial.py 127.0.0.1 $MOTO_PORT" 2>/dev/null || true
  pkill -f "dynalite/cli.js --host 127.0.0.1 --port $DYNALITE_PORT" 2>/dev/null || true
}

case "${1:-up}" in
  up)
    need_redis_binaries
    mkdir -p "$STATE_DIR"
    redis_up
    cluster_up
    moto_up
    dynalite_up
    chromium_up || true
    ;;
  chromium)
    chromium_up
    ;;
  down)
    cluster_down
    emulators_down
    ;;
  *)
    die "usage: $0 up|down|chromium"
    ;;
esac
