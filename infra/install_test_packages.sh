#!/usr/bin/env bash
# The Debian packages only the tests use (idempotent: nothing to do when both are there):
# PostgreSQL's server, for the deployment's instance storage (infra/local_postgres.py), and chromium,
# which the browser test drives through Playwright's Python package (no `playwright install`).
set -euo pipefail
missing=()
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing Debian packages for the tests: ${missing[*]} (apt-get install ${missing[*]})" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
