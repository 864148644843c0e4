#!/usr/bin/env bash
# Side-by-side relay benchmark (not a test): the same load through four paths on this
# machine, in one run, for 2 KB and 100 KB messages:
#
#   ceiling   kurir-loadtest send -> kurir-loadtest sink (no relay: the machine's ceiling)
#   kurir     send -> kurir serve (all-in-one, embedded durable queue, as shipped) -> sink
#   cluster   send -> kurir --role submit -> Tansu (Kafka API) + redis-server
#                  -> 2 x kurir --role deliver -> sink
#   postfix   send -> a private Postfix instance (disk queue, as shipped) -> sink
#
#   scripts/bench-compare.sh                   # everything (~10 minutes)
#   N2K=5000 N100K=500 CONNS=20 scripts/bench-compare.sh ceiling kurir   # subsets
#
# For each path and size: messages/s accepted (send's report) and delivered (N / time from
# the first send to the sink's N-th message), accept latency p50/p99 (send), delivery
# latency p50/p99 (sink, from the X-Kurir-Loadtest header), CPU seconds per 1,000 messages
# of the relay's processes (utime+stime from /proc/PID/stat, children reaped by Postfix's
# master included), and peak RSS (VmHWM, reset before each size via clear_refs; summed
# over processes for the cluster and Postfix, which overcounts shared pages).
# The ceiling and the all-in-one alternate, ROUNDS times (default 3), and the ratios use
# the medians: on a shared VM one row of the CPU-bound relay varied by up to 30 % between
# runs while the latency-bound ceiling stayed within 2 %, so one pair decided nothing.
# A fresh sink per size; kurir's processes are restarted per size too (Tansu and redis
# stay up), because a kurir node kept across the sink's restart deferred a message whose
# pooled connection had died to the 1-minute retry tier. Postfix runs through both sizes.
#
# Loopback only: everything listens on 127.0.0.1, recipients are *.load.test, Postfix
# relays only to the sink (relayhost, DNS disabled). Installs Postfix with apt-get when it
# is missing (as root or with sudo, "No configuration", so no system MTA is started); the
# cluster path needs `tansu` (scripts/test.sh installs it) and `redis-server`, and is
# skipped with a note when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

N2K=${N2K:-60000}
N100K=${N100K:-6000}
CONNS=${CONNS:-50}
ROUNDS=${ROUNDS:-3}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(ceiling kurir cluster postfix)
want() { local t; for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

export PATH="$PATH:/usr/sbin:$HOME/.cargo/bin"
if want postfix && ! command -v postfix >/dev/null; then
  sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "installing postfix" >&2
  echo "postfix postfix/main_mailer_type select No configuration" | "${sudo[@]}" debconf-set-selections
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix >&2 ||
    echo "postfix could not be installed: skipping it" >&2
fi

echo "building (release)" >&2
cargo build --release -p kurir -p kurir-loadtest >&2
bin=$root/target/release
lt=$bin/kurir-loadtest

tmp=$(mktemp -d /tmp/kurir-bench-compare.XXXXXX)
pids=()          # background processes to stop at the end
postfix_dir=""
cleanup() {
  set +e
  [ -n "$postfix_dir" ] && postfix -c "$postfix_dir" stop >/dev/null 2>&1
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # PORT [SECONDS]
  local i
  for ((i = 0; i < ${2:-30} * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on 127.0.0.1:$1" >&2
  return 1
}
now() { date +%s.%N; }
hz=$(getconf CLK_TCK)
# utime+stime (+ cutime+cstime: reaped children) of PIDS, in clock ticks.
cpu_ticks() {
  local p t=0
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    # fields after the ")" of comm: utime=12 stime=13 cutime=14 cstime=15 (1-based there)
    t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12+$13+$14+$15}')))
  done
  echo "$t"
}
reset_hwm() { local p; for p in "$@"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }
hwm_kb() {
  local p t=0 v
  for p in "$@"; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    t=$((t + ${v:-0}))
  done
  echo "$t"
}

sink_port=$(free_port)
results=$tmp/results.tsv
: >"$results"

# measure LABEL SIZE N SMTP_PORT PIDS_FUNCTION
# PIDS_FUNCTION prints the relay's process ids (empty for the ceiling).
measure() {
  local label=$1 size=$2 n=$3 port=$4 pidsf=$5
  # Write back what earlier rows left dirty (Postfix's queue files, kurir's data), so it
  # is not flushed during this row.
  sync
  local sink_json=$tmp/sink-$label-$size.json send_json=$tmp/send-$label-$size.json
  "$lt" sink --listen "127.0.0.1:$sink_port" --until-messages "$n" --duration 600s \
    --stats-interval 0s --json >"$sink_json" 2>"$tmp/sink.err" &
  local sink_pid=$!
  wait_port "$sink_port"
  local ps_before; ps_before=$($pidsf)
  # shellcheck disable=SC2086
  reset_hwm $ps_before
  # shellcheck disable=SC2086
  local c0; c0=$(cpu_ticks $ps_before)
  local p per0=()
  for p in $ps_before; do per0+=("$(cpu_ticks "$p")"); done
  local l1; l1=$(cut -d' ' -f1 /proc/loadavg)
  echo "== $label $size: $n messages, $CONNS connections (load $l1)" >&2
  local t0 t1 t2
  t0=$(now)
  "$lt" send --smtp "127.0.0.1:$port" -n "$n" -c "$CONNS" --size "$size" --json --no-progress \
    >"$send_json" 2>"$tmp/send.err" || echo "send exited with an error" >&2
  t1=$(now)
  wait "$sink_pid" || echo "sink exited with an error (timeout?)" >&2
  t2=$(now)
  local ps_after; ps_after=$($pidsf)
  # shellcheck disable=SC2086
  local c1; c1=$(cpu_ticks $ps_after)
  # Where a relay of several processes spent its CPU (tenths of a second per process, in
  # the order its PIDS_FUNCTION lists them).
  local i=0 split="" same=$ps_after
  [ "$ps_after" = "$ps_before" ] || same="" # processes came and went (Postfix)
  for p in $same; do
    split+=" $(ps -o comm= -p "$p" 2>/dev/null || echo "?")=$(((($(cpu_ticks "$p") - ${per0[$i]:-0}) * 10 / hz)))"
    i=$((i + 1))
  done
  if [ "$i" -gt 1 ]; then
    echo "   CPU by process (tenths of s):$split" >&2
    notes+=("$label $size CPU by process, tenths of a second:$split")
  fi
  # shellcheck disable=SC2086
  local rss; rss=$(hwm_kb $ps_after)
  local l2; l2=$(cut -d' ' -f1 /proc/loadavg)
  python3 - "$label" "$size" "$n" "$send_json" "$sink_json" "$t0" "$t1" "$t2" "$c0" "$c1" "$hz" \
    "$rss" "$l1" "$l2" "${ps_after:+x}" >>"$results" <<'EOF'
import json, sys
(label, size, n, send_f, sink_f, t0, t1, t2, c0, c1, hz, rss, l1, l2, has) = sys.argv[1:]
n = int(n); t0, t1, t2 = float(t0), float(t1), float(t2)
try:
    send = json.load(open(send_f))
except Exception:
    send = {"accepted": 0, "throughput_per_s": 0, "accept_latency": {"p50_ms": 0, "p99_ms": 0}, "failed": n}
try:
    sink = json.load(open(sink_f))
except Exception:
    sink = {"messages": 0, "delivery_latency": {"p50_ms": 0, "p99_ms": 0}, "duplicates": 0}
delivered = sink["messages"]
cpu = (int(c1) - int(c0)) / int(hz)
cols = [
    label, size, str(n), str(send["accepted"]), "%.0f" % send["throughput_per_s"],
    str(delivered), "%.0f" % (delivered / (t2 - t0)),
    "%.1f / %.1f" % (send["accept_latency"]["p50_ms"], send["accept_latency"]["p99_ms"]),
    "%.0f / %.0f" % (sink["delivery_latency"]["p50_ms"], sink["delivery_latency"]["p99_ms"]),
    ("%.2f" % (cpu / send["accepted"] * 1000)) if has and send["accepted"] else "-",
    ("%.0f" % (int(rss) / 1024)) if has else "-",
    "%s-%s" % (l1, l2),
]
print("\t".join(cols))
EOF
  tail -1 "$results" >&2
}

no_pids() { :; }
run_sizes() { # LABEL PORT PIDS_FUNCTION
  measure "$1" 2k "$N2K" "$2" "$3"
  measure "$1" 100k "$N100K" "$2" "$3"
}

notes=()

# kurir config shared by both kurir forms
kurir_config() { # DIR SMTP_LISTENERS EXTRA
  cat <<EOF
[node]
data_dir = "$1/data"
[log]
level = "warn"
[http]
listen = "127.0.0.1:0"
[smtp]
listeners = [$2]
[grpc]
enabled = false
[[deliver.routes]]
domains = ["*.load.test"]
host = "127.0.0.1:$sink_port"
tls = "disable"
$3
EOF
}
start_kurir() { # NAME ROLES CONFIG [RUST_LOG] -> pid in $started
  env ${4:+RUST_LOG=$4} "$bin/kurir" serve --role "$2" --config "$3" >"$tmp/$1.out" 2>"$tmp/$1.err" &
  started=$!
  pids+=("$started")
}

# --- (a) ceiling: generator straight into the sink, and (b) kurir all-in-one ----------
# alternating, ROUNDS times.
if want kurir; then
  d=$tmp/kurir; mkdir -p "$d"
  kport=$(free_port)
  kurir_config "$d" "{ address = \"127.0.0.1:$kport\", mode = \"plain\" }" "" >"$d/kurir.toml"
  kurir_pids() { echo "$kurir_pid"; }
fi
for ((round = 1; round <= ROUNDS; round++)); do
  for size in 2k 100k; do
    n=$N2K; [ "$size" = 2k ] || n=$N100K
    if want ceiling; then
      measure ceiling "$size" "$n" "$sink_port" no_pids
    fi
    if want kurir; then
      # A fresh process and data directory per row (the sink restarts between rows, see
      # the notes).
      rm -rf "$d/data"
      start_kurir kurir submit,deliver "$d/kurir.toml"
      kurir_pid=$started
      wait_port "$kport"
      measure kurir "$size" "$n" "$kport" kurir_pids
      kill "$kurir_pid"; wait "$kurir_pid" || true
    fi
  done
done

# --- (c) kurir cluster: Tansu + redis + 1 submit + 2 deliver ---------------------------
if want cluster; then
  if ! command -v tansu >/dev/null || ! command -v redis-server >/dev/null; then
    notes+=("cluster: not measured (tansu or redis-server missing; scripts/test.sh installs tansu)")
  else
    d=$tmp/cluster; mkdir -p "$d"
    bport=$(free_port); rport=$(free_port); cport=$(free_port)
    (cd "$d" && RUST_LOG=warn exec tansu broker --storage-engine memory://tansu/ \
      --listener-url "tcp://127.0.0.1:$bport" --advertised-listener-url "tcp://127.0.0.1:$bport" \
      --cluster-id kurir-bench >"$d/tansu.log" 2>&1) &
    tansu_pid=$!; pids+=("$tansu_pid")
    redis-server --bind 127.0.0.1 --port "$rport" --save "" --appendonly no \
      --dir "$d" >"$d/redis.log" 2>&1 &
    redis_pid=$!; pids+=("$redis_pid")
    wait_port "$bport"; wait_port "$rport"
    extra="[queue]
backend = \"kafka\"
[queue.kafka]
brokers = \"127.0.0.1:$bport\"
properties = { \"linger.ms\" = \"0\" }
[state]
backend = \"redis\"
[state.redis]
url = \"redis://127.0.0.1:$rport/\""
    mkdir -p "$d/submit" "$d/deliver1" "$d/deliver2"
    kurir_config "$d/submit" "{ address = \"127.0.0.1:$cport\", mode = \"plain\" }" "$extra" >"$d/submit.toml"
    kurir_config "$d/deliver1" "" "$extra" >"$d/deliver1.toml"
    kurir_config "$d/deliver2" "" "$extra" >"$d/deliver2.toml"
    cluster_pids() { echo "$submit_pid $d1_pid $d2_pid $tansu_pid $redis_pid"; }
    # Fresh kurir processes per size (broker and redis stay up).
    for size in 2k 100k; do
      start_kurir submit submit "$d/submit.toml"; submit_pid=$started
      wait_port "$cport" 60
      # Each delivery node logs its partition assignments; the row starts once both own
      # partitions (with one node owning them all, "two delivery nodes" would be one) and
      # the split has not changed for 3 s (each topic's group rebalances on its own, as the
      # nodes join).
      assigned="warn,kurir_queue::kafka::consumer=info"
      start_kurir deliver1 deliver "$d/deliver1.toml" "$assigned"; d1_pid=$started
      start_kurir deliver2 deliver "$d/deliver2.toml" "$assigned"; d2_pid=$started
      owned() { # NODE -> partitions it owns now (assigned minus revoked)
        echo $(($(grep -c "partition assigned" "$tmp/$1.err") - $(grep -c "partition revoked" "$tmp/$1.err")))
      }
      last="" same=0
      for ((i = 0; i < 120; i++)); do
        o1=$(owned deliver1) o2=$(owned deliver2)
        if [ "$o1 $o2" = "$last" ]; then same=$((same + 1)); else same=0; last="$o1 $o2"; fi
        [ "$o1" -gt 0 ] && [ "$o2" -gt 0 ] && [ "$same" -ge 6 ] && break
        sleep 0.5
      done
      [ "$i" -lt 120 ] || echo "cluster: the delivery nodes' partitions did not settle in 60 s" >&2
      echo "   partitions owned: deliver1 $o1, deliver2 $o2" >&2
      n=$N2K; [ "$size" = 2k ] || n=$N100K
      measure cluster "$size" "$n" "$cport" cluster_pids
      kill "$submit_pid" "$d1_pid" "$d2_pid"; wait "$submit_pid" "$d1_pid" "$d2_pid" || true
    done
    kill "$tansu_pid" "$redis_pid" 2>/dev/null || true
    wait "$tansu_pid" "$redis_pid" 2>/dev/null || true
  fi
fi

# --- (d) Postfix ----------------------------------------------------------------------
if want postfix; then
  if ! command -v postfix >/dev/null; then
    notes+=("postfix: not measured (not installed)")
  else
    pport=$(free_port)
    postfix_dir=$tmp/postfix
    mkdir -p "$postfix_dir/queue" "$postfix_dir/data"
    cp /etc/postfix/master.cf "$postfix_dir/master.cf"
    cat >"$postfix_dir/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $postfix_dir/queue
data_directory = $postfix_dir/data
maillog_file_prefixes = $postfix_dir
maillog_file = $postfix_dir/maillog
myhostname = mta.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
alias_maps =
alias_database =
local_recipient_maps =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
relayhost = [127.0.0.1]:$sink_port
default_transport = smtp
relay_transport = smtp
smtp_dns_support_level = disabled
disable_dns_lookups = yes
smtpd_peername_lookup = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
EOF
    # no chroot (the queue is a temp dir); SMTP on the private port instead of 25
    postconf -c "$postfix_dir" -F '*/*/chroot = n'
    postconf -c "$postfix_dir" -MX smtp/inet
    postconf -c "$postfix_dir" -Me "127.0.0.1:$pport/inet = 127.0.0.1:$pport inet n - n - - smtpd"
    chmod 755 "$tmp" "$postfix_dir"
    chown postfix "$postfix_dir/data"
    # (Postfix logs to $postfix_dir/maillog; its commands print nothing without a tty)
    postfix -c "$postfix_dir" set-permissions create-missing >/dev/null 2>&1 || true
    postfix -c "$postfix_dir" start >&2 ||
      { tail -20 "$postfix_dir/maillog" >&2; exit 1; }
    wait_port "$pport"
    postfix_pids() {
      local master
      master=$(cat "$postfix_dir/queue/pid/master.pid" 2>/dev/null | tr -d ' ')
      [ -n "$master" ] || return 0
      echo "$master $(pgrep -P "$master" | tr '\n' ' ')"
    }
    run_sizes postfix "$pport" postfix_pids
    postfix -c "$postfix_dir" stop >&2 || true
    postfix_dir=""
  fi
fi

# --- report ---------------------------------------------------------------------------
report() {
echo
echo "nproc: $(nproc); CPU: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo); $(date -u '+%F %H:%M UTC'); $N2K x 2 KB, $N100K x 100 KB, $CONNS connections; ceiling and kurir alternate $ROUNDS times"
echo
echo "| path | size | sent | accepted | accepted msg/s | delivered | delivered msg/s | accept p50 / p99 ms | delivery p50 / p99 ms | CPU s / 1000 msgs | peak RSS MiB | load avg (1 min) before-after |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
sed 's/\t/ | /g; s/^/| /; s/$/ |/' "$results"
python3 - "$results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    c = line.rstrip("\n").split("\t")
    rows.setdefault((c[0], c[1]), []).append(float(c[6]))
median = lambda key: statistics.median(rows[key]) if key in rows else None
print()
print("Delivered msg/s, medians of the rows above; ratios of medians.")
for size in ("2k", "100k"):
    k = median(("kurir", size))
    if k is None:
        continue
    pf = median(("postfix", size)); ce = median(("ceiling", size))
    parts = []
    if pf:
        parts.append("kurir/postfix delivered %.1fx (target >= 5x: %s)" % (k / pf, "met" if k >= 5 * pf else "MISSED"))
    if ce:
        each = ", ".join("%.0f" % (100 * a / b) for a, b in zip(rows[("kurir", size)], rows[("ceiling", size)]))
        parts.append("kurir/ceiling %.0f %% (target >= 40 %%: %s; round by round %s %%)" % (100 * k / ce, "met" if k >= 0.4 * ce else "MISSED", each))
    print("- %s: %s" % (size, "; ".join(parts)))
EOF
for n in "${notes[@]}"; do echo "- $n"; done
}
report | tee "$tmp/report.md"

# A full run (every path, default sizes) replaces the table between the markers in
# docs/BENCHMARKS.md; subsets and custom sizes only print.
if [ ${#targets[@]} -eq 4 ] && [ "$N2K" = 60000 ] && [ "$N100K" = 6000 ] && [ "$CONNS" = 50 ] &&
  [ "$ROUNDS" = 3 ]; then
  python3 - "$root/docs/BENCHMARKS.md" "$tmp/report.md" <<'EOF'
import sys
doc_path, report_path = sys.argv[1], sys.argv[2]
doc = open(doc_path).read()
begin, end = "<!-- bench-compare:begin -->", "<!-- bench-compare:end -->"
if begin not in doc or end not in doc:
    sys.exit("docs/BENCHMARKS.md has no bench-compare markers: not written")
head, rest = doc.split(begin, 1)
_, tail = rest.split(end, 1)
report = open(report_path).read().strip("\n")
open(doc_path, "w").write(head + begin + "\n" + report + "\n" + end + tail)
print("written to docs/BENCHMARKS.md", file=sys.stderr)
EOF
fi
