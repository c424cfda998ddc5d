#!/usr/bin/env bash
# Dead-code check of `make lint`: runs the deadcode pinned in go.mod (`go tool deadcode`, no
# -test) over the module and fails when it reports a function that .ci/deadcode.allow does not
# list, or when an entry of the list matches nothing any more. GO names the go command.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO=${GO:-go}
allow_file=.ci/deadcode.allow

module=$("$GO" list -m)
# "<package dir>.<func>\t<file:line:col>", the package relative to the module.
report=$("$GO" tool deadcode -f '{{range .Funcs}}{{printf "%s.%s\t%s\n" $.Path .Name .Position}}{{end}}' ./...)
report=${report//"$module/"/}

allowed=()
while IFS= read -r line; do
	line=${line%%#*}
	line=${line//[[:space:]]/}
	[[ -n $line ]] && allowed+=("$line")
done <"$allow_file"

fail=0
declare -A used=()
while IFS=$'\t' read -r name pos; do
	[[ -n $name ]] || continue
	ok=0
	for pat in "${allowed[@]}"; do
		# shellcheck disable=SC2053 # the entry is a glob on purpose
		if [[ $name == $pat ]]; then
			ok=1
			used[$pat]=1
		fi
	done
	if ((!ok)); then
		echo "deadcode: $pos: $name is unreachable from the flashgrab binary: delete it, or list it in $allow_file with the reason"
		fail=1
	fi
done <<<"$report"

for pat in "${allowed[@]}"; do
	if [[ -z ${used[$pat]:-} ]]; then
		echo "deadcode: $allow_file lists $pat, which deadcode no longer reports: delete the entry"
		fail=1
	fi
done
exit "$fail"
