#!/usr/bin/env bash
# Installs the Debian packages needed to build, run and test kms, and only
# those that are missing.  It asks dpkg first so that the common case, where
# everything is present, costs one dpkg-query and prints nothing.
set -euo pipefail

PACKAGES=(
	# Build.
	build-essential
	make
	pkg-config
	libgrpc-dev
	protobuf-c-compiler
	libprotobuf-c-dev
	libssl-dev
	libinih-dev
	libjansson-dev
	libp11-kit-dev
	libcmocka-dev
	libmicrohttpd-dev	# kmsd's metrics endpoint
	libsystemd-dev		# sd_notify: Type=notify and the watchdog
	scdoc			# the man pages
	clang			# libFuzzer targets
	libclang-rt-14-dev
	# Run: the default HSM and the dev PKI.
	softhsm2
	p11-kit
	openssl
	util-linux		# flock(1) in setup.sh
	# Integration tests.
	opensc			# pkcs11-tool
	python3
	python3-grpcio
	python3-grpc-tools
	python3-protobuf
	python3-pytest
	python3-pytest-random-order	# the suite runs in a random order
	python3-prometheus-client	# parses the metrics
	man-db			# man -l on the pages
	systemd			# systemd-analyze security on the unit
	chromium		# renders the audit report
	python3-pil		# reads its screenshot
	etcd-server		# the etcd store's tests run their own cluster
	etcd-client		# etcdctl: compaction and checks in those tests
	# The PKCS#11 module's tests: the signing tools themselves.
	libengine-pkcs11-openssl	# OpenSSL's pkcs11 engine (libp11)
	gnutls-bin		# p11tool
	openssh-client		# ssh-keygen, ssh-agent, ssh-add
	openjdk-17-jdk-headless	# jarsigner, SunPKCS11
	apksigner
	aapt			# a binary AndroidManifest.xml for apksigner
	osslsigncode
	gcab			# a CAB file for osslsigncode
)

# `deps.sh bench` (make bench) adds what the benchmarks need.
if [ "${1:-}" = bench ]; then
	PACKAGES+=(
		time		# bench/ota.sh reads peak RSS from /usr/bin/time
		hyperfine	# bench/capgo.sh
		gnuplot-nox	# the plot
		# The db-backed SoftHSM2 build, its indexes, profiles.
		libsqlite3-dev
		sqlite3
		valgrind
		linux-perf
	)
fi

# The Capgo interoperability tests and bench/capgo.sh run Capgo's CLI from
# npm: Debian's nodejs and npm, unless a node that brings its own npm (as
# NodeSource's, which conflicts with Debian's npm) is installed already.
if ! command -v npm >/dev/null 2>&1; then
	PACKAGES+=(nodejs npm)
fi

# One dpkg-query for all of them; a package that dpkg has never heard of is
# reported on stderr and simply missing from the output.
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' \
    "${PACKAGES[@]}" 2>/dev/null || true)

missing=()
for p in "${PACKAGES[@]}"; do
	if ! grep -qx "$p installed" <<<"$installed"; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi

echo "deps: installing ${missing[*]}" >&2
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive

# Installing etcd-server would start a system etcd on the default ports
# (2379/2380).  The tests run clusters of their own on ports of their own and
# need only the binary, so while apt runs, a policy-rc.d forbids starting any
# service (one already there is kept as it is), and the unit the package
# enables is disabled again.  An etcd that was installed before is left
# alone.
policy=/usr/sbin/policy-rc.d
own_policy=0
new_etcd=0
if [[ " ${missing[*]} " == *" etcd-server "* ]]; then
	new_etcd=1
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# kms deps.sh: no service starts during the install\nexit 101\n' |
		    "${SUDO[@]}" tee "$policy" >/dev/null
		"${SUDO[@]}" chmod 755 "$policy"
		own_policy=1
		trap '"${SUDO[@]}" rm -f "$policy"' EXIT
	fi
fi
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends "${missing[@]}"
if [ "$new_etcd" = 1 ]; then
	"${SUDO[@]}" deb-systemd-helper disable etcd.service >/dev/null 2>&1 || true
fi
if [ "$own_policy" = 1 ]; then
	"${SUDO[@]}" rm -f "$policy"
	trap - EXIT
fi
