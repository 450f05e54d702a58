#!/usr/bin/env bash
# softhsm2-db.sh DIR: builds SoftHSM2 with its SQLite object store (the
# "db" back-end) into DIR, once, and prints the module's path.
#
# Debian's softhsm2 2.6.1 is configured without it: with
# "objectstore.backend = db" in softhsm2.conf its module and softhsm2-util
# fail with "Could not select token backend".  The source is the one the
# Debian package is built from (the .orig tarball of the installed version,
# fetched with apt-get source from the system's own Debian archive and
# checked by apt against the signed Sources index), configured like
# Debian's build (OpenSSL crypto back-end, ECC and EdDSA) plus
# --with-objectstore-backend-db.  The same module serves both back-ends,
# so that a comparison of the two measures the object store alone.
set -euo pipefail

mkdir -p "$1"
DIR=$(cd "$1" && pwd)
MOD=$DIR/lib/softhsm/libsofthsm2.so
if [ -r "$MOD" ]; then
	echo "$MOD"
	exit 0
fi
work=$DIR/src
rm -rf "$work"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" \
    "$work/apt/sources"

# A private apt configuration: the system's Debian URI and suite as
# deb-src, its own lists and cache; nothing of the system's apt state is
# changed.
ver=$(dpkg-query -W -f='${Version}' softhsm2)
. /etc/os-release
uri=$(awk '/^URIs:/ { print $2; exit }' \
    /etc/apt/sources.list.d/debian.sources 2>/dev/null)
cat >"$work/apt/sources/debian-src.sources" <<EOF
Types: deb-src
URIs: ${uri:-http://deb.debian.org/debian}
Suites: $VERSION_CODENAME
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
APT=(apt-get -qq -o Dir::Etc::SourceList=/dev/null
    -o Dir::Etc::SourceParts="$work/apt/sources"
    -o Dir::State::Lists="$work/apt/lists"
    -o Dir::Cache="$work/apt/cache"
    -o APT::Sandbox::User=root)
echo "softhsm2-db: fetching the source of softhsm2 $ver" >&2
"${APT[@]}" update >&2
# Only the upstream tarball is needed; a mirror that lacks the Debian
# packaging part still serves it, and apt checks each file it fetched.
(cd "$work" && "${APT[@]}" source --download-only "softhsm2=$ver" >&2) ||
    true
orig=$(ls "$work"/softhsm2_*.orig.tar.gz 2>/dev/null | head -1)
[ -n "$orig" ] || { echo "softhsm2-db: no source tarball fetched" >&2; exit 1; }
dsc=$(ls "$work"/softhsm2_*.dsc | head -1)
sum=$(sha256sum "$orig" | cut -d' ' -f1)
grep -q " $sum [0-9]* $(basename "$orig")\$" "$dsc" ||
    { echo "softhsm2-db: $orig does not match $dsc" >&2; exit 1; }
tar -C "$work" -xzf "$orig"
cd "$work"/softhsm2-*/
echo "softhsm2-db: building (a few minutes)" >&2
if ! ./configure --prefix="$DIR" --with-crypto-backend=openssl \
    --enable-ecc --enable-eddsa --disable-gost --disable-p11-kit \
    --with-objectstore-backend-db >"$work/make.log" 2>&1 ||
    ! make -j2 >>"$work/make.log" 2>&1 || ! make install \
    >>"$work/make.log" 2>&1; then
	tail -30 "$work/make.log" >&2
	exit 1
fi
[ -r "$MOD" ] || { echo "softhsm2-db: the build made no module" >&2; exit 1; }
rm -rf "$work"
echo "$MOD"
