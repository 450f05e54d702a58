#!/usr/bin/env bash
# pki.sh DIR: makes the dev PKI in DIR, reusing whatever is already there.
#
#   DIR/ca.pem, ca.key                  EC P-256 CA, 10 years
#   DIR/server.pem, server.key          localhost and 127.0.0.1, serverAuth
#   DIR/clients/NAME.pem, NAME.key      CN=NAME, clientAuth
#
# Keys are never replaced once made.  A certificate is issued again (for the
# same key) when it is missing, does not verify against ca.pem, or expires
# within a day, so a state directory survives a lost CA certificate or an
# old checkout without anyone deleting files by hand.  Every file is written
# to a temporary name and renamed, so an interrupted run leaves no half file.
# The caller (setup.sh) holds the lock that keeps two runs apart.
set -euo pipefail

DIR=${1:?usage: pki.sh DIR}
CLIENTS=(ci officer auditor unwrapper)
CA_DAYS=3650
LEAF_DAYS=825

umask 077
mkdir -p "$DIR/clients"
chmod 0755 "$DIR" "$DIR/clients"

TMP=$(mktemp -d "$DIR/.pki.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# Writes a new P-256 private key to $1 (mode 0600) unless it exists.
make_key() {
	local key=$1

	[ -s "$key" ] && return 0
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
	    -out "$TMP/key.pem" 2>/dev/null
	chmod 0600 "$TMP/key.pem"
	mv "$TMP/key.pem" "$key"
}

# A random positive serial number, as RFC 5280 asks (at most 20 octets).
serial() {
	echo "0x7$(openssl rand -hex 15)"
}

# True when certificate $1 exists, chains to the CA and is good for a day.
cert_ok() {
	local cert=$1

	[ -s "$cert" ] || return 1
	openssl x509 -in "$cert" -noout -checkend 86400 >/dev/null 2>&1 ||
	    return 1
	openssl verify -CAfile "$DIR/ca.pem" "$cert" >/dev/null 2>&1
}

# True when certificate $1 holds the public half of key $2.
cert_matches_key() {
	local a b

	a=$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null) || return 1
	b=$(openssl pkey -in "$2" -pubout 2>/dev/null) || return 1
	[ "$a" = "$b" ]
}

# issue CERT KEY SUBJECT EXTENSIONS...: signs a certificate for KEY with the CA.
issue() {
	local cert=$1 key=$2 subj=$3
	shift 3

	printf '%s\n' "$@" >"$TMP/ext.cnf"
	openssl req -new -key "$key" -subj "$subj" -out "$TMP/req.pem"
	openssl x509 -req -in "$TMP/req.pem" -CA "$DIR/ca.pem" \
	    -CAkey "$DIR/ca.key" -set_serial "$(serial)" -days "$LEAF_DAYS" \
	    -sha256 -extfile "$TMP/ext.cnf" -out "$TMP/cert.pem" 2>/dev/null
	chmod 0644 "$TMP/cert.pem"
	mv "$TMP/cert.pem" "$cert"
}

# The CA.  A CA certificate that lost its key cannot sign anything: then the
# key is made first and the certificate again.
make_key "$DIR/ca.key"
if ! [ -s "$DIR/ca.pem" ] ||
    ! openssl x509 -in "$DIR/ca.pem" -noout -checkend 86400 >/dev/null 2>&1 ||
    ! cert_matches_key "$DIR/ca.pem" "$DIR/ca.key"; then
	cat >"$TMP/ca.cnf" <<-'EOF'
	[req]
	distinguished_name = dn
	prompt = no
	[dn]
	CN = kms dev CA
	[v3_ca]
	basicConstraints = critical, CA:TRUE, pathlen:0
	keyUsage = critical, keyCertSign, cRLSign
	subjectKeyIdentifier = hash
	authorityKeyIdentifier = keyid:always
	EOF
	openssl req -new -x509 -config "$TMP/ca.cnf" -extensions v3_ca \
	    -key "$DIR/ca.key" -set_serial "$(serial)" -days "$CA_DAYS" \
	    -sha256 -out "$TMP/ca.pem"
	chmod 0644 "$TMP/ca.pem"
	mv "$TMP/ca.pem" "$DIR/ca.pem"
fi

make_key "$DIR/server.key"
if ! cert_ok "$DIR/server.pem" ||
    ! cert_matches_key "$DIR/server.pem" "$DIR/server.key"; then
	issue "$DIR/server.pem" "$DIR/server.key" "/CN=localhost" \
	    "basicConstraints = critical, CA:FALSE" \
	    "keyUsage = critical, digitalSignature" \
	    "extendedKeyUsage = serverAuth" \
	    "subjectAltName = DNS:localhost, IP:127.0.0.1" \
	    "subjectKeyIdentifier = hash" \
	    "authorityKeyIdentifier = keyid"
fi

for name in "${CLIENTS[@]}"; do
	key="$DIR/clients/$name.key"
	cert="$DIR/clients/$name.pem"
	make_key "$key"
	if ! cert_ok "$cert" || ! cert_matches_key "$cert" "$key"; then
		issue "$cert" "$key" "/CN=$name" \
		    "basicConstraints = critical, CA:FALSE" \
		    "keyUsage = critical, digitalSignature" \
		    "extendedKeyUsage = clientAuth" \
		    "subjectKeyIdentifier = hash" \
		    "authorityKeyIdentifier = keyid"
	fi
done
