#!/usr/bin/env bash
# Delivery throughput benchmark (not a test): messages/s a delivery node moves from the
# durable embedded queue to local SMTP sinks, next to the machine's ceiling (Postfix's
# smtp-source into smtp-sink) measured in the same run, plus a slow sink at several
# connection limits. See crates/kurir-deliver/benches/deliver.rs for what each row means.
#
#   scripts/bench-deliver.sh                 # everything (~2 minutes)
#   scripts/bench-deliver.sh kurir 2KB       # arguments go to the bench (sections, sizes,
#                                            # domains=N, connections=N, in_flight=N)
#   scripts/bench-deliver.sh --perf kurir 2KB domains=100
#                                            # also record a profile: target/deliver.perf.data
#
# Installs Postfix's smtp-source/smtp-sink when they are missing (apt-get, as root or with
# sudo; the package is set to "No configuration", so no MTA is started). Loopback only:
# sinks listen on 127.0.0.x, recipients are .test domains, DNS is the test kit's server.
set -euo pipefail
cd "$(dirname "$0")/.."

perf=false
if [ "${1:-}" = "--perf" ]; then
  perf=true
  shift
fi

export PATH="$PATH:/usr/sbin"
if ! command -v smtp-sink >/dev/null || ! command -v smtp-source >/dev/null; then
  sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "installing postfix (for smtp-source and smtp-sink)" >&2
  echo "postfix postfix/main_mailer_type select No configuration" | "${sudo[@]}" debconf-set-selections
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix >&2
fi

echo "nproc: $(nproc); CPU: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo); $(date -u +%F)" >&2
if $perf; then
  command -v perf >/dev/null || { echo "needs perf: apt-get install linux-perf" >&2; exit 2; }
  cargo bench -p kurir-deliver --bench deliver --no-run >&2
  exec perf record -F 999 -g --call-graph dwarf,16384 -o target/deliver.perf.data -- \
    cargo bench -p kurir-deliver --bench deliver -- "$@"
fi
exec cargo bench -p kurir-deliver --bench deliver -- "$@"
