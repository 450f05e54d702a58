#!/usr/bin/env bash
# setup.sh: makes the dev state directory $KMS_HOME (default: var/ at the top
# of the source tree) and reuses everything already in it, so keys survive.
#
#   softhsm2.conf     SoftHSM2 configuration, tokens in $KMS_HOME/tokens
#   tokens/           the token labelled "kms"
#   pin, so-pin       its user and SO PINs (mode 0600)
#   pki/              dev CA, server and client certificates (see pki.sh)
#   policy.conf       copy of hsm-config/policy.conf
#   kmsd.conf         kmsd's configuration
#   audit/            the audit log
#
# Two runs on one $KMS_HOME (two dev servers started together) are kept
# apart by a lock on $KMS_HOME/.setup.lock.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(dirname "$HERE")
KMS_HOME=${KMS_HOME:-$TOP/var}
KMS_ADDR=${KMS_ADDR:-127.0.0.1:7443}
# KMS_PKCS11_MODULE: another SoftHSM2 build (the benchmark's db back-end).
MODULE=${KMS_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
LABEL=kms

die() {
	echo "setup: $*" >&2
	exit 1
}

for tool in openssl pkcs11-tool flock; do
	command -v "$tool" >/dev/null ||
	    die "$tool is missing: run 'make deps' (hsm-config/deps.sh)"
done
[ -r "$MODULE" ] || die "$MODULE is missing: run 'make deps'"

mkdir -p "$KMS_HOME"
# SoftHSM wants an absolute token directory, whatever the caller's directory.
KMS_HOME=$(cd "$KMS_HOME" && pwd)
chmod 0700 "$KMS_HOME"

exec 9>"$KMS_HOME/.setup.lock"
flock 9

umask 077

# Escapes a value for the replacement side of a sed s||| command.
sed_escape() {
	printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'
}

# render TEMPLATE OUT: writes OUT from TEMPLATE unless OUT exists, so that a
# developer's edits survive.
render() {
	local in=$1 out=$2

	[ -e "$out" ] && return 0
	sed -e "s|@KMS_HOME@|$(sed_escape "$KMS_HOME")|g" \
	    -e "s|@KMS_ADDR@|$(sed_escape "$KMS_ADDR")|g" \
	    "$in" >"$out.tmp"
	chmod 0644 "$out.tmp"
	mv "$out.tmp" "$out"
}

mkdir -p "$KMS_HOME/tokens" "$KMS_HOME/audit"
render "$HERE/softhsm2.conf.in" "$KMS_HOME/softhsm2.conf"
export SOFTHSM2_CONF="$KMS_HOME/softhsm2.conf"

# Prints "ID STATE LABEL" for each slot, where STATE is "uninitialized",
# "nopin" (token initialised, user PIN not yet) or "ready".
slots() {
	pkcs11-tool --module "$MODULE" --list-slots 2>/dev/null | awk '
	function flush() {
		if (id != "")
			print id, state, label
		id = ""; state = ""; label = ""
	}
	/^Slot [0-9]+ \(0x[0-9a-fA-F]+\)/ {
		flush()
		id = $3; gsub(/[():]/, "", id)
	}
	/token state:[ \t]+uninitialized/ { state = "uninitialized" }
	/token label[ \t]*:/ {
		label = $0; sub(/^[^:]*:[ \t]*/, "", label); sub(/[ \t]+$/, "", label)
	}
	/token flags[ \t]*:/ {
		state = ($0 ~ /PIN initialized/) ? "ready" : "nopin"
	}
	END { flush() }'
}

# random_pin FILE: a fresh random PIN in FILE (0600) unless FILE exists.
# The PIN goes from openssl's stdout to the file; it is never an argument.
random_pin() {
	local file=$1

	[ -s "$file" ] && return 0
	openssl rand -hex 16 >"$file.tmp"
	chmod 0600 "$file.tmp"
	mv "$file.tmp" "$file"
}

# The token.  pkcs11-tool reads the PINs from the environment (`env:NAME`),
# which only this user can read, so no PIN is ever on a command line.
token=$(slots | awk -v l="$LABEL" '$3 == l { print $1, $2; exit }')
if [ -z "$token" ]; then
	if [ -e "$KMS_HOME/pin" ] &&
	    [ -n "$(find "$KMS_HOME/tokens" -mindepth 1 -print -quit)" ]; then
		die "no token labelled '$LABEL' in $KMS_HOME/tokens although" \
		    "$KMS_HOME/pin exists; move $KMS_HOME away to start afresh"
	fi
	random_pin "$KMS_HOME/so-pin"
	random_pin "$KMS_HOME/pin"
	free=$(slots | awk '$2 == "uninitialized" { print $1; exit }')
	[ -n "$free" ] || die "SoftHSM has no free slot in $KMS_HOME/tokens"
	KMS_SETUP_SO_PIN=$(<"$KMS_HOME/so-pin") \
	    pkcs11-tool --module "$MODULE" --slot "$free" --init-token \
	    --label "$LABEL" --so-pin env:KMS_SETUP_SO_PIN >/dev/null
	token=$(slots | awk -v l="$LABEL" '$3 == l { print $1, $2; exit }')
	[ -n "$token" ] || die "token '$LABEL' did not appear after init"
fi
if [ "${token#* }" = nopin ]; then
	# Also finishes a run that stopped between the two steps.
	[ -s "$KMS_HOME/so-pin" ] || die "token '$LABEL' has no user PIN" \
	    "and $KMS_HOME/so-pin is missing"
	random_pin "$KMS_HOME/pin"
	KMS_SETUP_SO_PIN=$(<"$KMS_HOME/so-pin") \
	    KMS_SETUP_PIN=$(<"$KMS_HOME/pin") \
	    pkcs11-tool --module "$MODULE" --slot "${token%% *}" \
	    --login --login-type so --so-pin env:KMS_SETUP_SO_PIN \
	    --init-pin --new-pin env:KMS_SETUP_PIN >/dev/null
fi
[ -s "$KMS_HOME/pin" ] || die "token '$LABEL' exists but $KMS_HOME/pin" \
    "is missing"
chmod 0600 "$KMS_HOME/pin"
if [ -e "$KMS_HOME/so-pin" ]; then
	chmod 0600 "$KMS_HOME/so-pin"
fi

bash "$HERE/pki.sh" "$KMS_HOME/pki"

if ! [ -e "$KMS_HOME/policy.conf" ]; then
	[ -r "$HERE/policy.conf" ] || die "$HERE/policy.conf is missing"
	cp "$HERE/policy.conf" "$KMS_HOME/policy.conf.tmp"
	chmod 0644 "$KMS_HOME/policy.conf.tmp"
	mv "$KMS_HOME/policy.conf.tmp" "$KMS_HOME/policy.conf"
fi

render "$HERE/kmsd.conf.in" "$KMS_HOME/kmsd.conf"
