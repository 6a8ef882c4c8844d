#!/usr/bin/env bash
# crypto.sh -- build bench/crypto.c against an optimized chappe archive and run it, bounded.
# SPDX-License-Identifier: ISC
#
# Usage: bash bench/crypto.sh        (or: make bench-crypto)       -- see bench/README.md
# Builds src/*.c (except main.c) and llhttp with -O2 into build/bench-crypto/ (only what changed
# since the last build), then runs build/bench-crypto/crypto under `timeout`. About 30 s.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

ROUNDS=${CRYPTO_ROUNDS:-5}        # timed rounds per variant (median kept), 1-20
ROUND_MS=${CRYPTO_ROUND_MS:-600}  # length of one round, 10-5000 ms
CC=${CC:-cc}
OUT=build/bench-crypto
LLHTTP_DIR=/usr/share/llhttp
LLHTTP_INC=/usr/share/include/llhttp
CPPFLAGS=(-D_GNU_SOURCE -Iinclude "-I$LLHTTP_INC")
CFLAGS=(-std=gnu11 -pthread -O2 -g)
WARN=(-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
    -Wno-missing-field-initializers)
LIBS=(-luv -lmbedtls -lmbedx509 -lmbedcrypto -llmdb -lsodium -ljansson -lcares -lyaml -lpthread)
JOBS=$(nproc 2>/dev/null || echo 1)
((JOBS > 2)) && JOBS=2 # a shared machine: stay modest

say() { printf '%s\n' "$*" >&2; }

# --- build: an object is rebuilt when its source or any header is newer ----------------------
compile() { # SRC OBJ
    case $1 in
    "$LLHTTP_DIR"/*) "$CC" "-I$LLHTTP_INC" -DLLHTTP_STRICT_MODE=1 -O2 -g -w -c -o "$2" "$1" ;;
    *) "$CC" "${CPPFLAGS[@]}" "${CFLAGS[@]}" -c -o "$2" "$1" ;;
    esac
}

mkdir -p "$OUT/obj" "$OUT/llhttp"
newest_hdr=
for h in include/chappe/*.h; do
    if [[ -z $newest_hdr || $h -nt $newest_hdr ]]; then newest_hdr=$h; fi
done
objs=()
stale=() # SRC OBJ pairs
for src in src/*.c; do
    [[ $src == src/main.c ]] && continue
    obj=$OUT/obj/$(basename "${src%.c}").o
    objs+=("$obj")
    if [[ ! -e $obj || $src -nt $obj || $newest_hdr -nt $obj ]]; then stale+=("$src" "$obj"); fi
done
for src in "$LLHTTP_DIR"/{api,http,llhttp}.c; do
    obj=$OUT/llhttp/$(basename "${src%.c}").o
    objs+=("$obj")
    [[ -e $obj ]] || stale+=("$src" "$obj")
done
if ((${#stale[@]})); then
    say "crypto: compiling $((${#stale[@]} / 2)) file(s) with -O2 into $OUT/"
    running=0
    for ((i = 0; i < ${#stale[@]}; i += 2)); do
        if ((running >= JOBS)); then
            wait -n
            running=$((running - 1))
        fi
        compile "${stale[i]}" "${stale[i + 1]}" &
        running=$((running + 1))
    done
    while ((running > 0)); do
        wait -n
        running=$((running - 1))
    done
    rm -f "$OUT/libchappe.a"
fi
[[ -e $OUT/libchappe.a ]] || ar rcs "$OUT/libchappe.a" "${objs[@]}"
"$CC" "${CPPFLAGS[@]}" "${CFLAGS[@]}" "${WARN[@]}" -o "$OUT/crypto" bench/crypto.c \
    "$OUT/libchappe.a" "${LIBS[@]}"

# --- run ---------------------------------------------------------------------------------------
model=$(LC_ALL=C lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
printf 'date: %s\nmachine: nproc %s, "%s", %s\nbefore: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$(nproc)" "${model:-unknown}" "$(uname -sr)" "$(uptime)"
printf 'commit: %s%s\n\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$(git diff --quiet HEAD -- src include 2>/dev/null || echo ' (src/include modified)')"
# the timed part is ROUNDS x ROUND_MS x 8 variants; allow that plus 30 s, then stop it
limit=$((ROUNDS * ROUND_MS * 8 / 1000 + 30))
rc=0
timeout --kill-after=5 "$limit" "$OUT/crypto" "$ROUNDS" "$ROUND_MS" || rc=$?
printf '\nafter: %s\n' "$(uptime)"
((rc == 124)) && say "crypto: stopped after $limit s"
exit "$rc"
