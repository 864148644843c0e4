#!/usr/bin/env bash
# The one test command: installs what the tests need when it is missing, then checks
# formatting and lints and runs the whole test suite against real servers.
#
#   scripts/test.sh            # everything (what CI runs)
#   KURIR_SKIP_LINT=1 scripts/test.sh -p kurir-core   # extra args go to the test runner
#
# Installs (only when missing): redis-server, python3 and swaks with its TLS modules
# (apt-get), the Kafka-API test broker Tansu (cargo install, pinned). Tests only ever talk
# to loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\n==> %s\n' "$*" >&2; }

install_apt_packages() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v python3 >/dev/null || missing+=(python3)
  command -v swaks >/dev/null || missing+=(swaks libnet-ssleay-perl)
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]} with apt-get"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_tansu() {
  if tansu --version 2>/dev/null | grep -qF "$TANSU_VERSION"; then
    return 0
  fi
  log "installing the Kafka-API test broker tansu $TANSU_VERSION (cargo install, takes a while once)"
  cargo install tansu --locked --version "$TANSU_VERSION" --features dynostore
}

start=$(date +%s)
install_apt_packages
install_tansu
log "tools ready after $(( $(date +%s) - start ))s"

if [ -z "${KURIR_SKIP_LINT:-}" ]; then
  log "cargo fmt --check"
  cargo fmt --all -- --check
  log "cargo clippy -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

log "cargo test"
cargo test --workspace --locked "$@"
log "all tests passed after $(( $(date +%s) - start ))s"
