#!/bin/sh
# gen.sh -- make the development certificates (dev CA, server, SNI alt, egress CA) with openssl.
# SPDX-License-Identifier: ISC
#
# Usage: sh certs/gen.sh [--force] OUTDIR
#
# Writes into OUTDIR, all keys ECDSA P-256 (PKCS#8 PEM, mode 0600; certificates 0644):
#   ca.crt, ca.key                 dev CA "chappe dev CA", CA:TRUE, keyCertSign+cRLSign, 10 years
#   server.crt, server.key         leaf signed by the dev CA, 825 days, serverAuth, SAN
#                                  localhost, relay.localhost, hs.localhost, 127.0.0.1, ::1
#   alt.crt, alt.key               leaf signed by the dev CA, SAN alt.localhost only (SNI tests)
#   egress-ca.crt, egress-ca.key   "chappe dev egress CA", CA:TRUE pathlen:0 (CONNECT interception)
# server.crt and alt.crt hold the leaf only: the dev CA is a root, which a server need not send
# (RFC 5246 section 7.4.2); clients trust ca.crt (curl --cacert, Synapse federation_custom_ca_list).
# Does nothing when OUTDIR/ca.crt exists, unless --force. Prints one line per file written.
# Development only: never use these in production.
set -eu

usage() {
    echo "usage: sh certs/gen.sh [--force] OUTDIR" >&2
    exit 2
}

force=0
out=
for arg in "$@"; do
    case "$arg" in
    --force) force=1 ;;
    -h | --help) usage ;;
    -*) echo "gen.sh: unknown option $arg" >&2; usage ;;
    *)
        [ -z "$out" ] || usage
        out=$arg
        ;;
    esac
done
[ -n "$out" ] || usage

if [ -e "$out/ca.crt" ] && [ "$force" -eq 0 ]; then
    echo "gen.sh: $out/ca.crt exists, nothing done (--force to remake)" >&2
    exit 0
fi
command -v openssl >/dev/null 2>&1 || { echo "gen.sh: openssl not found" >&2; exit 1; }

umask 077
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/chappe-gen.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

# Our own config: no dependence on the system openssl.cnf and its default extensions.
cat >"$tmp/openssl.cnf" <<'EOF'
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ egress_ext ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ server_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, DNS:relay.localhost, DNS:hs.localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ alt_ext ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:alt.localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

cnf=$tmp/openssl.cnf

genkey() { # FILE
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt ec_param_enc:named_curve -out "$1" 2>"$tmp/err" || {
        cat "$tmp/err" >&2
        exit 1
    }
}

serial() { # a random positive 128-bit serial (RFC 5280 section 4.1.2.2: at most 20 octets)
    echo "0x$(openssl rand -hex 16)"
}

selfsigned() { # NAME CN EXT DAYS
    genkey "$tmp/$1.key"
    openssl req -new -x509 -config "$cnf" -extensions "$3" -key "$tmp/$1.key" -sha256 \
        -subj "/CN=$2" -days "$4" -set_serial "$(serial)" -out "$tmp/$1.crt" 2>"$tmp/err" || {
        cat "$tmp/err" >&2
        exit 1
    }
}

leaf() { # NAME CN EXT
    genkey "$tmp/$1.key"
    openssl req -new -config "$cnf" -key "$tmp/$1.key" -subj "/CN=$2" -out "$tmp/$1.csr" \
        2>"$tmp/err" || {
        cat "$tmp/err" >&2
        exit 1
    }
    # 825 days: the longest validity Apple platforms accept for a TLS server certificate.
    openssl x509 -req -in "$tmp/$1.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
        -set_serial "$(serial)" -sha256 -days 825 -extfile "$cnf" -extensions "$3" \
        -out "$tmp/$1.crt" 2>"$tmp/err" || {
        cat "$tmp/err" >&2
        exit 1
    }
}

selfsigned ca "chappe dev CA" ca_ext 3650
leaf server localhost server_ext
leaf alt alt.localhost alt_ext
selfsigned egress-ca "chappe dev egress CA" egress_ext 3650

# Install: keys first, ca.crt last, so that an interrupted run is never taken for a finished one.
install_file() { # NAME MODE WHAT
    chmod "$2" "$tmp/$1"
    mv -f "$tmp/$1" "$out/$1"
    echo "$out/$1 ($3)"
}
install_file ca.key 600 "dev CA key, ECDSA P-256"
install_file server.key 600 "server key, ECDSA P-256"
install_file server.crt 644 "server certificate, leaf only, 825 days"
install_file alt.key 600 "SNI alt key, ECDSA P-256"
install_file alt.crt 644 "SNI alt certificate, alt.localhost, 825 days"
install_file egress-ca.key 600 "egress CA key, ECDSA P-256"
install_file egress-ca.crt 644 "egress CA certificate, pathlen 0, 10 years"
install_file ca.crt 644 "dev CA certificate, 10 years"
