#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration, broker contract, macro UI, browser and doc tests.
#
# The Redis and RabbitMQ adapter tests talk to real servers (127.0.0.1:6379 and 127.0.0.1:5672, or
# CELERIAC_REDIS_URL / CELERIAC_AMQP_URL). This script starts them when they are installed but not
# running, installs them with apt-get when missing and run as root, and otherwise stops with a clear
# message. It never lets a broker test pass silently without its broker.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

port_open() { # host port
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_for_port() { # host port seconds what
  local deadline=$((SECONDS + $3))
  until port_open "$1" "$2"; do
    if ((SECONDS >= deadline)); then
      echo "error: $4 did not start listening on $1:$2 within $3 s" >&2
      return 1
    fi
    sleep 0.5
  done
}

apt_updated=0
apt_install() { # package...
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    return 1
  fi
  if ((apt_updated == 0)); then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_redis() {
  if port_open 127.0.0.1 6379; then return; fi
  if ! command -v redis-server >/dev/null; then
    say "installing redis-server"
    apt_install redis-server || {
      echo "error: Redis is not running on 127.0.0.1:6379 and redis-server is not installed." >&2
      echo "       Install it (apt-get install redis-server) or set CELERIAC_REDIS_URL." >&2
      exit 1
    }
  fi
  say "starting redis-server"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_for_port 127.0.0.1 6379 30 "redis-server"
}

ensure_rabbitmq() {
  if port_open 127.0.0.1 5672; then return; fi
  if ! command -v rabbitmq-server >/dev/null; then
    say "installing rabbitmq-server"
    apt_install rabbitmq-server || {
      echo "error: RabbitMQ is not running on 127.0.0.1:5672 and rabbitmq-server is not installed." >&2
      echo "       Install it (apt-get install rabbitmq-server) or set CELERIAC_AMQP_URL." >&2
      exit 1
    }
  fi
  say "starting rabbitmq-server"
  rabbitmq-server -detached
  rabbitmqctl await_startup --timeout 120 >/dev/null
  wait_for_port 127.0.0.1 5672 60 "rabbitmq-server"
}

ensure_browser() {
  if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then return; fi
  say "installing chromium and chromium-driver (for the demo's and the dashboard's browser tests)"
  apt_install chromium chromium-driver || {
    echo "error: the browser tests need Debian's chromium and chromium-driver packages." >&2
    echo "       Install them (apt-get install chromium chromium-driver), or set CELERIAC_SKIP_BROWSER=1 outside CI." >&2
    exit 1
  }
}

# Python Celery (and the Redis client it uses) for the interop tests, in a virtualenv under target/,
# pinned by tests/python/requirements.txt. Made once; remade when the requirements change.
ensure_python_celery() {
  local venv=target/celery-interop-venv requirements=tests/python/requirements.txt
  export CELERIAC_PYTHON="$PWD/$venv/bin/python"
  if [[ -x $CELERIAC_PYTHON ]] && cmp -s "$requirements" "$venv/requirements.txt"; then return; fi
  if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    say "installing python3 and python3-venv"
    apt_install python3 python3-venv || {
      echo "error: the Celery interop tests need Python 3 with venv (apt-get install python3 python3-venv)." >&2
      exit 1
    }
  fi
  say "installing Python Celery in $venv (for the interop tests)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" || {
    echo "error: pip could not install $requirements (the Celery interop tests need it)." >&2
    exit 1
  }
  cp "$requirements" "$venv/requirements.txt"
}

# The Redis Cluster tests start their own nodes: they need redis-server and redis-cli (Debian's
# redis-server package brings both) and util-linux's setpriv, wherever the shared Redis runs.
ensure_redis_cluster_tools() {
  if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then return; fi
  say "installing redis-server and redis-tools (for the Redis Cluster tests)"
  apt_install redis-server redis-tools || {
    echo "error: the Redis Cluster tests need redis-server and redis-cli (apt-get install redis-server)." >&2
    exit 1
  }
}

# Only start local services for the brokers whose URL is not given explicitly.
[[ -n ${CELERIAC_REDIS_URL:-} ]] || ensure_redis
[[ -n ${CELERIAC_SKIP_BROKERS:-} ]] || ensure_redis_cluster_tools
[[ -n ${CELERIAC_AMQP_URL:-} ]] || ensure_rabbitmq
[[ -n ${CELERIAC_SKIP_BROWSER:-} ]] || ensure_browser
ensure_python_celery

# Earlier runs leave their uniquely named queues behind (durable on RabbitMQ): remove them first,
# so the shared servers do not fill up run after run. A failed cleanup only warns.
say "removing queues and keys left by earlier runs"
cargo build -q --locked -p celeriac-tests --bin celeriac-test-cleanup
cleanup=target/debug/celeriac-test-cleanup
"$cleanup" redis || echo "warning: Redis cleanup failed; the tests still run" >&2
if [[ -z ${CELERIAC_AMQP_URL:-} ]] && command -v rabbitmqctl >/dev/null; then
  rabbitmqctl list_queues name --quiet --no-table-headers 2>/dev/null | "$cleanup" amqp ||
    echo "warning: RabbitMQ cleanup failed; the tests still run" >&2
fi

say "building every test"
cargo test --workspace --locked --no-run

# Two suites spend minutes that the rest need not wait for: the beat failover tests mostly wait (their
# leaders are killed over two minutes), and the macro UI tests compile on their own (trybuild, niced
# so that it takes only the CPU the other tests leave). They run beside the rest, each once: the main
# run skips exactly what runs beside it, and a failure in either fails the script.
beside_logs=target/tests-beside
mkdir -p "$beside_logs"
beside_pids=()
beside_names=()
beside_counts=()
run_beside() { # name test-target filter expected-tests [niceness]
  local name=$1 target=$2 filter=$3 expected=$4 niceness=${5:-0}
  # A session of its own, so that stopping it stops the processes its tests start too.
  setsid --wait nice -n "$niceness" cargo test --workspace --locked --test "$target" -- "$filter" \
    >"$beside_logs/$name.log" 2>&1 &
  beside_pids+=($!)
  beside_names+=("$name")
  beside_counts+=("$expected")
}
stop_beside() {
  for pid in "${beside_pids[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
}
trap stop_beside EXIT
run_beside beat-failover beat beat_failover_sends_every_tick_once 2
run_beside macro-ui ui task_macro_ui 1 10

say "cargo test --workspace (beside it: ${beside_names[*]})"
cargo test --workspace --locked -- \
  --skip beat_failover_sends_every_tick_once --skip task_macro_ui

failed=0
for i in "${!beside_pids[@]}"; do
  name=${beside_names[$i]} log="$beside_logs/${beside_names[$i]}.log"
  if wait "${beside_pids[$i]}"; then
    passed=$(sed -n 's/^test result: ok\. \([0-9]*\) passed.*/\1/p' "$log" | tail -1)
    if [[ ${passed:-0} -eq ${beside_counts[$i]} ]]; then
      say "$name (run beside the rest): ${passed} passed"
      continue
    fi
    # A renamed test would otherwise leave its run empty, and pass.
    say "$name: ${passed:-no} tests ran where ${beside_counts[$i]} were expected"
  else
    say "$name: FAILED"
  fi
  cat "$log"
  failed=1
done
trap - EXIT
if ((failed)); then
  echo "error: a suite run beside the others failed (see above)" >&2
  exit 1
fi
