#!/usr/bin/env bash
# Installs the Debian packages Jejaring needs that a fresh machine may lack:
# Python's venv module (the project's own tools and environment), Java 17+ and Maven (to
# fetch and run the Kafka broker), and, unless `--run` is given (what `make run` needs:
# the stack on SQLite), PostgreSQL's server (tests, `--database postgresql`) and Chromium
# (the browser tests drive /usr/bin/chromium; no browser is ever downloaded).
# Installs only what is missing; as root it uses apt-get, otherwise it says what to install.
set -euo pipefail

missing=()
"${PYTHON:-python3}" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# Kafka 4 needs Java 17 or later; Debian's default JRE is 17 on bookworm, 21 on trixie.
java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1; }
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  missing+=(default-jre-headless)
fi
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if [ "${1:-}" != "--run" ]; then
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${JEJARING_PG_BINDIR:-}" ]; then
    missing+=(postgresql)
  fi
  [ -x /usr/bin/chromium ] || missing+=(chromium)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]}" >&2
  echo "Install them with: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "Installing ${missing[*]} from Debian's packages..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts a system cluster on install; the project runs its own servers instead.
if [[ " ${missing[*]} " == *" postgresql "* ]] && command -v pg_lsclusters >/dev/null; then
  pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
    pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
  done
fi
