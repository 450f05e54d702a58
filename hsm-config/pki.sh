#!/usr/bin/env bash
# pki.sh DIR: makes the dev PKI in DIR, reusing whatever is already there.
# pki.sh DIR issue NAME [URI]: also issues a client certificate for the
#   identity NAME (CN=NAME, and the URI SAN URI when given, which then is
#   the identity) into DIR/clients/NAME.pem and NAME.key.
# pki.sh DIR revoke NAME: revokes DIR/clients/NAME.pem, writes the new
#   DIR/crl.pem and moves the certificate and its key to DIR/revoked/;
#   `kill -HUP` kmsd to apply it.  The next run issues NAME afresh (new
#   key) if it is one of the built-in identities.
#
#   DIR/ca.pem, ca.key                  EC P-256 CA, 10 years
#   DIR/server.pem, server.key          localhost and 127.0.0.1, serverAuth
#   DIR/clients/NAME.pem, NAME.key      CN=NAME, clientAuth
#   DIR/crl.pem                         the CA's CRL, renewed a week before
#                                       its next update is due
#   DIR/ca/                             the CA's database of revocations
#
# Keys are never replaced once made.  A certificate is issued again (for the
# same key) when it is missing, does not verify against ca.pem, or expires
# within a day, so a state directory survives a lost CA certificate or an
# old checkout without anyone deleting files by hand.  Every file is written
# to a temporary name and renamed, so an interrupted run leaves no half file.
# The caller (setup.sh) holds the lock that keeps two runs apart.
set -euo pipefail

USAGE="usage: pki.sh DIR [issue NAME [URI] | revoke NAME]"
DIR=${1:?$USAGE}
CMD=${2:-}
CLIENTS=(ci officer auditor unwrapper)
CA_DAYS=3650
LEAF_DAYS=825
CRL_DAYS=365
CRL_RENEW_DAYS=7

die() {
	echo "pki.sh: $*" >&2
	exit 1
}

case "$CMD" in
"") ;;
issue | revoke)
	NAME=${3:?$USAGE}
	# A file name, and never one of kmsd's own identities.
	[[ $NAME =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] ||
	    die "$NAME: an identity here is 1-64 of A-Z a-z 0-9 . _ -"
	[[ $NAME == kmsd* ]] && die "$NAME: kmsd's names cannot be issued"
	;;
*) die "$USAGE" ;;
esac

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

# The CA's database and the configuration `openssl ca` works with.
ca_config() {
	mkdir -p "$DIR/ca"
	[ -e "$DIR/ca/index.txt" ] || : >"$DIR/ca/index.txt"
	[ -s "$DIR/ca/crlnumber" ] || echo 1000 >"$DIR/ca/crlnumber"
	cat >"$TMP/ca.cnf" <<-EOF
	[ca]
	default_ca = dev
	[dev]
	database = $DIR/ca/index.txt
	crlnumber = $DIR/ca/crlnumber
	certificate = $DIR/ca.pem
	private_key = $DIR/ca.key
	default_md = sha256
	default_crl_days = $CRL_DAYS
	crl_extensions = crl_ext
	[crl_ext]
	authorityKeyIdentifier = keyid:always
	EOF
}

make_crl() {
	ca_config
	openssl ca -gencrl -config "$TMP/ca.cnf" -out "$TMP/crl.pem" \
	    2>"$TMP/err" || die "cannot make the CRL: $(<"$TMP/err")"
	chmod 0644 "$TMP/crl.pem"
	mv "$TMP/crl.pem" "$DIR/crl.pem"
}

# True when crl.pem is signed by the CA and good for a week more.
crl_ok() {
	local next

	[ -s "$DIR/crl.pem" ] || return 1
	openssl crl -in "$DIR/crl.pem" -noout -CAfile "$DIR/ca.pem" \
	    >/dev/null 2>&1 || return 1
	next=$(openssl crl -in "$DIR/crl.pem" -noout -nextupdate) || return 1
	next=$(date -d "${next#nextUpdate=}" +%s) || return 1
	[ "$next" -gt $(($(date +%s) + CRL_RENEW_DAYS * 86400)) ]
}

crl_ok || make_crl

case "$CMD" in
issue)
	key="$DIR/clients/$NAME.key"
	cert="$DIR/clients/$NAME.pem"
	if cert_ok "$cert" && cert_matches_key "$cert" "$key"; then
		echo "$cert exists and is valid; revoke it first to replace it"
		exit 0
	fi
	ext=("basicConstraints = critical, CA:FALSE"
	    "keyUsage = critical, digitalSignature"
	    "extendedKeyUsage = clientAuth"
	    "subjectKeyIdentifier = hash"
	    "authorityKeyIdentifier = keyid")
	if [ -n "${4:-}" ]; then
		[[ $4 =~ ^[A-Za-z][A-Za-z0-9+.-]*:[!-~]{1,500}$ ]] ||
		    die "$4: not a URI"
		ext+=("subjectAltName = URI:$4")
	fi
	make_key "$key"
	issue "$cert" "$key" "/CN=$NAME" "${ext[@]}"
	echo "issued $cert (key $key) for identity ${4:-$NAME}"
	;;
revoke)
	cert="$DIR/clients/$NAME.pem"
	[ -s "$cert" ] || die "$cert: no such certificate"
	ca_config
	openssl ca -config "$TMP/ca.cnf" -revoke "$cert" \
	    -crl_reason keyCompromise 2>"$TMP/err" ||
	    grep -q "already revoked" "$TMP/err" ||
	    die "cannot revoke $cert: $(<"$TMP/err")"
	make_crl
	serial=$(openssl x509 -in "$cert" -noout -serial)
	mkdir -p "$DIR/revoked"
	mv "$cert" "$DIR/revoked/$NAME-${serial#serial=}.pem"
	mv "$DIR/clients/$NAME.key" "$DIR/revoked/$NAME-${serial#serial=}.key"
	echo "revoked $NAME (${serial}); $DIR/crl.pem updated:" \
	    "send kmsd SIGHUP to apply it"
	;;
esac
