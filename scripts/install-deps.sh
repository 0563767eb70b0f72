#!/usr/bin/env bash
# Installs the Debian packages sprayer needs to build, test or benchmark (only those missing).
# usage: scripts/install-deps.sh [build|test|bench]...   (default: build)
set -euo pipefail

build_pkgs=(build-essential ccache cmake pkg-config libuv1-dev libsystemd-dev node-llhttp libssl-dev libyaml-cpp-dev
            prometheus-cpp-dev doctest-dev libsqlite3-dev libpq-dev libmariadb-dev unixodbc-dev libldap-dev python3 curl openssl)
test_pkgs=(clang libclang-rt-14-dev procps iproute2 postgresql mariadb-server odbc-mariadb libsqliteodbc keepalived testssl.sh prometheus chromium chromium-driver
           logrotate lintian slapd ldap-utils gnutls-bin libwolfssl-dev)
bench_pkgs=(wrk haproxy nginx util-linux)

wanted=()
for group in "${@:-build}"; do
  case "$group" in
    build) wanted+=("${build_pkgs[@]}") ;;
    test) wanted+=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
    bench) wanted+=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
    *) echo "install-deps: unknown group $group" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
