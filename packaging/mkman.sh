#!/usr/bin/env bash
# mkman.sh SRC.scd OUT KMSCTL EXAMPLE VERSION: a man page from its scdoc
# source.  kmsctl(1)'s COMMANDS and EXIT STATUS come from kmsctl's own
# command table (kmsctl help), kmsd.conf(5)'s EXAMPLE from the example
# configuration, so that the help, the man pages and the installed example
# say the same thing.
set -euo pipefail

src=$1 out=$2 kmsctl=$3 example=$4 version=$5
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

commands() {
	"$kmsctl" help | sed -n 's/^  \([a-z]\{1,\}\)\( [a-z]\{1,\}\)\{0,1\}  .*/\1\2/p' |
	while read -r group sub; do
		# shellcheck disable=SC2086
		"$kmsctl" help $group $sub >"$tmp.cmd"
		usage=$(sed -n '1,/^$/p' "$tmp.cmd" | sed -e 's/^usage: kmsctl //' \
		    -e 's/^       //' -e '/^$/d')
		printf '## %s%s\n\n' "$group" "${sub:+ $sub}"
		printf '```\n%s\n```\n\n' "$usage"
		# The summary, then the options and examples as they are.
		sed -e '1,/^$/d' "$tmp.cmd" | sed -n '1p'
		printf '\n```\n'
		# troff would take a backslash as an escape.
		sed -e '1,/^$/d' "$tmp.cmd" | sed -e '1d' -e '/./,$!d' \
		    -e 's/\\/\\\\/g'
		printf '```\n\n'
	done
	rm -f "$tmp.cmd"
}

exits() {
	"$kmsctl" help | sed -n '/^exit codes:/,/^$/p' | sed -n 's/^  \([0-9]\)  \(.*\)/*\1*\n\t\2\n/p'
}

while IFS= read -r line; do
	case $line in
	@COMMANDS@) commands ;;
	@EXIT@) exits ;;
	@EXAMPLE@) cat "$example" ;;
	*) printf '%s\n' "$line" ;;
	esac
done <"$src" >"$tmp"
mkdir -p "$(dirname "$out")"
scdoc <"$tmp" | sed "1,/^\.TH/ s/^\(\.TH .*\)\"[^\"]*\"\$/\1\"kms $version\"/" >"$out"
