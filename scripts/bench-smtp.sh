#!/usr/bin/env bash
# SMTP submission benchmark (not a test): messages/s accepted by kurir on the durable
# embedded queue, next to the machine's ceiling measured in the same run (the same
# generator into Postfix's smtp-sink, which accepts and discards).
#
#   scripts/bench-smtp.sh            # needs Postfix's smtp-source/smtp-sink (apt-get install postfix)
#
# Loopback only: kurir and the sink listen on 127.0.0.1; recipients are .test domains that
# nothing delivers (the delivery role is not built; mail stays in a temp queue).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v smtp-source >/dev/null || { echo "needs smtp-source: apt-get install postfix" >&2; exit 2; }

cargo build --release -p kurir >&2
KURIR=target/release/kurir
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# rate SESSIONS MESSAGES SIZE PORT: messages/s of one smtp-source run (-d: sessions reused)
rate() {
  local start end
  start=$(date +%s.%N)
  smtp-source -d -s "$1" -m "$2" -l "$3" -f sender@bench.test -t rcpt@bench.test "127.0.0.1:$4" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(f'{$2/($end-$start):.0f}')"
}

SINK_PORT=$(free_port)
# smtp-sink refuses to run as root without a user to drop to.
sink_user=(); [ "$(id -u)" -eq 0 ] && sink_user=(-u nobody)
smtp-sink "${sink_user[@]}" -c "127.0.0.1:$SINK_PORT" 2000 >/dev/null 2>&1 &
wait_port "$SINK_PORT"

start_kurir() { # NAME [EXTRA-TOML]: prints the SMTP port
  local port dir="$WORK/kurir-$1"
  port=$(free_port); mkdir -p "$dir"
  cat > "$dir/kurir.toml" <<TOML
${2:-}
[node]
data_dir = "$dir/data"
[log]
level = "warn"
[http]
listen = "127.0.0.1:0"
[smtp]
listeners = [{ address = "127.0.0.1:$port", mode = "plain" }]
[smtp.limits]
max_messages_per_connection = 10000000
max_connections = 4000
max_connections_per_ip = 4000
TOML
  "$KURIR" serve --config "$dir/kurir.toml" >"$dir/out.log" 2>"$dir/err.log" &
  echo $! > "$dir/pid"
  wait_port "$port"
  echo "$port"
}

peak_rss_mib() { awk '/VmHWM/ {printf "%d", $2/1024}' "/proc/$1/status"; }

echo "| message | sessions | messages | ceiling (smtp-sink) msg/s | kurir embedded msg/s | kurir / ceiling |"
echo "|---|---|---|---|---|---|"
for size in 2048 102400; do
  for sessions in 1 50 500; do
    n=$(( size == 2048 ? 20000 : 2000 ))
    [ "$sessions" -eq 1 ] && n=$(( n / 4 ))
    ceiling=$(rate "$sessions" "$n" "$size" "$SINK_PORT")
    port=$(start_kurir "$size-$sessions")
    kurir=$(rate "$sessions" "$n" "$size" "$port")
    kill -TERM "$(cat "$WORK/kurir-$size-$sessions/pid")"; wait "$(cat "$WORK/kurir-$size-$sessions/pid")" 2>/dev/null || true
    echo "| $((size / 1024)) KB | $sessions | $n | $ceiling | $kurir | $(python3 -c "print(f'{$kurir/$ceiling:.0%}')") |"
  done
done

# Kafka-backed submission: the same load with the queue on the Tansu test broker (in-memory,
# on this machine), when tansu is installed (scripts/test.sh installs it).
if command -v tansu >/dev/null; then
  TANSU_PORT=$(free_port)
  (cd "$WORK" && RUST_LOG=warn tansu broker --storage-engine memory://tansu/ \
    --listener-url "tcp://127.0.0.1:$TANSU_PORT" --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
    >/dev/null 2>&1 &)
  wait_port "$TANSU_PORT"
  kafka_toml=$(printf '[queue]\nbackend = "kafka"\n[queue.kafka]\nbrokers = "127.0.0.1:%s"\nlinger = "0s"\n' "$TANSU_PORT")
  echo
  echo "| message | sessions | messages | ceiling (smtp-sink) msg/s | kurir on Kafka (tansu) msg/s | kurir / ceiling |"
  echo "|---|---|---|---|---|---|"
  for sessions in 1 50; do
    n=$(( sessions == 1 ? 2000 : 20000 ))
    ceiling=$(rate "$sessions" "$n" 2048 "$SINK_PORT")
    port=$(start_kurir "kafka-$sessions" "$kafka_toml")
    kurir=$(rate "$sessions" "$n" 2048 "$port")
    kill -TERM "$(cat "$WORK/kurir-kafka-$sessions/pid")"; wait "$(cat "$WORK/kurir-kafka-$sessions/pid")" 2>/dev/null || true
    echo "| 2 KB | $sessions | $n | $ceiling | $kurir | $(python3 -c "print(f'{$kurir/$ceiling:.0%}')") |"
  done
  pkill -f "tcp://127.0.0.1:$TANSU_PORT" || true
fi

# Peak RSS with 1,000 sessions open at once.
port=$(start_kurir rss)
pid=$(cat "$WORK/kurir-rss/pid")
smtp-source -s 1000 -m 1000 -l 2048 -f sender@bench.test -t rcpt@bench.test "127.0.0.1:$port" >/dev/null
echo
echo "Peak RSS of kurir after 1,000 concurrent sessions (2 KB each): $(peak_rss_mib "$pid") MiB"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
