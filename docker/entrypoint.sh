#!/usr/bin/env bash
# Container entry point.
#
#   serve [ARGS...]   first start: `tandem init` (service key, schema, claim token); every
#                     start: print the service public key and keep a copy of it in the
#                     data volume; then exec `tandem serve` with ARGS appended.
#   -...              options only: the same as `serve -...`.
#   PROGRAM [ARGS...] tandem, sh, bash, python, python3 or a path: exec'd as given.
#   CMD [ARGS...]     anything else is a tandem command: exec `tandem CMD ARGS...`
#                     (so `init` is tandem's, whatever else is on PATH).
#
# The service key must not live in the data volume, and its directory must be a mount
# of its own (a volume or a secret), or a restarted container would make a new key.
# TANDEM_ALLOW_UNMOUNTED_KEY=1 lifts the mount check (throw-away trials only).
set -euo pipefail

data_dir="${TANDEM_DATA_DIR:-/data}"
key_file="${TANDEM_SERVICE_KEY_FILE:-/run/tandem/service.key}"
export TANDEM_DATA_DIR="$data_dir" TANDEM_SERVICE_KEY_FILE="$key_file"
public_copy="$data_dir/service-public.txt"

refuse() {
  echo "tandem-entrypoint: $*" >&2
  exit 64
}

is_mount_point() {  # $1: an absolute directory
  [ -r /proc/self/mountinfo ] || return 1
  awk -v dir="$1" '$5 == dir { found = 1 } END { exit !found }' /proc/self/mountinfo
}

check_key_location() {
  local data key key_dir
  data="$(realpath -m "$data_dir")"
  key="$(realpath -m "$key_file")"
  key_dir="$(dirname "$key")"
  case "$key/" in
    "$data"/*) refuse "the service key $key_file is inside the data volume $data_dir; mount it separately (see docs/container.md)" ;;
  esac
  if [ "${TANDEM_ALLOW_UNMOUNTED_KEY:-0}" != 1 ] && ! is_mount_point "$key_dir"; then
    refuse "$key_dir is not a mount: the service key would be lost with the container. Mount a volume or secret there (docker run -v tandem-key:$key_dir ...), or set TANDEM_ALLOW_UNMOUNTED_KEY=1 for a throw-away trial"
  fi
}

initialise() {
  local out
  mkdir -p "$data_dir"
  out="$(tandem init --data-dir "$data_dir")"
  # Shown in the container log: the service key id members compare at genesis, and on
  # the first start the one-time claim token.
  printf '%s\n' "$out"
  # Kept in the data volume: everything public `tandem init` printed, never the token.
  printf '%s\n' "$out" | grep -v -e 'tclaim_' -e '^claim token' > "$public_copy.tmp"
  mv "$public_copy.tmp" "$public_copy"
  echo "service public key kept in $public_copy"
}

if [ "$#" -eq 0 ]; then
  set -- serve
fi
case "$1" in
  serve)
    shift
    ;;
  -*)
    ;;
  tandem | sh | bash | python | python3 | */*)
    exec "$@"
    ;;
  *)
    exec tandem "$@"
    ;;
esac

check_key_location
initialise
exec tandem serve --host "${TANDEM_HOST:-0.0.0.0}" --port "${TANDEM_PORT:-8600}" "$@"
