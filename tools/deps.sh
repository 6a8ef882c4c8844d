#!/bin/sh
# deps.sh -- check chappe's Debian packages; install the missing ones when root.
# Usage: tools/deps.sh [core|fuzz|bench|lint|all]...   (default: core)
set -eu
core="libuv1-dev libmbedtls-dev liblmdb-dev libsodium-dev libjansson-dev libc-ares-dev
libyaml-dev node-llhttp libcmocka-dev python3-pytest python3-signedjson python3-nacl
python3-canonicaljson dnsmasq openssl curl"
fuzz="clang libclang-rt-14-dev"
bench="wrk nginx haproxy gnuplot-nox"
lint="cppcheck clang-tidy clang-format"
want=""
for group in "${@:-core}"; do
    case "$group" in
    core) want="$want $core" ;;
    fuzz) want="$want $fuzz" ;;
    bench) want="$want $bench" ;;
    lint) want="$want $lint" ;;
    all) want="$want $core $fuzz $bench $lint" ;;
    *) echo "usage: $0 [core|fuzz|bench|lint|all]..." >&2; exit 2 ;;
    esac
done
missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "chappe: missing Debian packages:$missing" >&2
    echo "install them with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
fi
echo "chappe: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >&2
