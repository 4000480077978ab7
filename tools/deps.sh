#!/usr/bin/env bash
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# Installs the Debian packages tsfarm needs, only those missing, without
# asking anything. Idempotent: a second run does nothing and says so.
#
#   tools/deps.sh [build|check|demo|bench]   (default: check)
#   tools/deps.sh --list PROFILE             print the packages and exit
set -euo pipefail

build_pkgs=(
        gcc make clang llvm pkg-config binutils
        libbpf-dev bpftool libelf-dev zlib1g-dev
        libsystemd-dev libinih-dev libjansson-dev
        libnl-3-dev libnl-route-3-dev libnl-genl-3-dev
        libsqlite3-dev
        libmicrohttpd-dev libcurl4-openssl-dev libssl-dev libgnutls28-dev
        libpam0g-dev
)
check_pkgs=(
        "${build_pkgs[@]}"
        libcmocka-dev libclang-rt-14-dev valgrind
        iproute2 jq procps util-linux xxd python3 systemd
)
# Multi-node farms and real RDP in the integration tests
# (tests/integration/lib/farm.sh, rdp.sh): ping and socat probe the farm's
# namespaces; xrdp with Xvnc sessions runs in each node, FreeRDP and rdesktop
# under Xvfb in a client namespace, openssl makes each node's certificate.
# xrdp's postinst only generates keys on a machine without systemd
# (invoke-rc.d finds no runlevel, or a policy-rc.d refuses): it starts
# nothing; the tests start their own xrdp inside namespaces.
rdp_pkgs=(
        iputils-ping socat
        xrdp tigervnc-standalone-server ssl-cert openssl
        freerdp2-x11 rdesktop xvfb xauth x11-utils
)
demo_pkgs=("${check_pkgs[@]}" "${rdp_pkgs[@]}")
bench_pkgs=("${check_pkgs[@]}" iputils-ping socat haproxy strace)

list=0
if [[ ${1:-} == --list ]]; then
        list=1
        shift
fi
profile=${1:-check}
case $profile in
build) pkgs=("${build_pkgs[@]}") ;;
check) pkgs=("${check_pkgs[@]}" "${rdp_pkgs[@]}") ;;
demo) pkgs=("${demo_pkgs[@]}") ;;
bench) pkgs=("${bench_pkgs[@]}") ;;
*)
        echo "deps.sh: unknown profile '$profile' (build, check, demo, bench)" >&2
        exit 2
        ;;
esac

if ((list)); then
        printf '%s\n' "${pkgs[@]}"
        exit 0
fi

missing=()
for p in "${pkgs[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
        [[ $status == ii* ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
        exit 0
fi

if ((EUID != 0)); then
        echo "deps.sh: missing packages: ${missing[*]}" >&2
        echo "deps.sh: run as root (or: apt-get install ${missing[*]})" >&2
        exit 1
fi

echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
# A fresh machine has empty lists; a stale one may name versions that are gone.
apt-get update -q >/dev/null
apt-get install "${apt_opts[@]}" --no-install-recommends "${missing[@]}" >/dev/null
echo "deps.sh: done"
