#!/usr/bin/env bash
# Smoke test of the FROM-scratch image with podman (not part of CI): three containers
# petkv-0..2, each with its own volume, as the StatefulSet's pods would run. Checks:
#   - the replicas' init step (`petkv wait-primary`) waits for the primary, petkv-0
#     bootstraps, petkv-1 and petkv-2 join (`petkv members`);
#   - a write through one container is readable (stale read) from each of the others;
#   - `podman stop` (SIGTERM to petkv as PID 1) exits 0 well within the grace period, and the
#     log shows the graceful shutdown;
#   - `podman start` with the same volume rejoins under the same node id, data intact.
# Runs as root (podman's rootful mode). Networking: `--network host` with every container on
# its own 127.0.0.1 ports (podman's bridge network is not available on every machine), a
# static peer map instead of DNS, and `--hostname petkv-N` so each node takes its identity from
# its hostname as in a pod. The host's petkv binary is the client.
# Usage: deploy/podman-smoke.sh   (builds the static binary first if it is missing)
set -euo pipefail
cd "$(dirname "$0")/.."

readonly IMAGE=localhost/petkv:scratch-smoke
readonly STATIC=target/x86_64-unknown-linux-musl/dist/petkv  # what Dockerfile.scratch copies
readonly BASE_PORT=37379  # pod N: client BASE+10N, peer +1, http +2
readonly GRACE_MS=20000

say() { printf '\n== %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "podman-smoke: run as root (rootful podman; apt-get and /etc/containers need it)" >&2
  exit 1
fi

# -- podman ----------------------------------------------------------------------------------
if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
  say "installing podman and runc"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc
fi

# runc as the OCI runtime and explicit ulimits (the defaults podman picks do not work on every
# host). Merged into containers.conf: other sections and keys stay as they are.
python3 - /etc/containers/containers.conf <<'PY'
import re, sys
from pathlib import Path

path = Path(sys.argv[1])
want = {
    "engine": {"runtime": '"runc"'},
    "containers": {"default_ulimits": '["nofile=1024:1024", "nproc=1024:1024"]'},
}
lines = path.read_text().splitlines() if path.exists() else []
for section, keys in want.items():
    header = re.compile(rf"^\s*\[{section}\]\s*(#.*)?$")
    start = next((i for i, l in enumerate(lines) if header.match(l)), None)
    if start is None:
        lines += ["", f"[{section}]"] + [f"{k} = {v}" for k, v in keys.items()]
        continue
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines))
    for key, value in keys.items():
        pat = re.compile(rf"^\s*{key}\s*=")
        hit = next((i for i in range(start + 1, end) if pat.match(lines[i])), None)
        if hit is None:
            lines.insert(start + 1, f"{key} = {value}")
            end += 1
        else:
            lines[hit] = f"{key} = {value}"
path.parent.mkdir(parents=True, exist_ok=True)
path.write_text("\n".join(lines).lstrip("\n") + "\n")
PY
echo "podman-smoke: $(podman --version), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}')"

# -- binaries and image ----------------------------------------------------------------------
if [[ ! -x $STATIC ]]; then
  say "building the static binary"
  CARGO_TARGET_DIR="$PWD/target" deploy/build-static.sh
fi
CLIENT=target/release/petkv
if [[ ! -x $CLIENT ]]; then
  # The static binary is the same code and runs on the host too.
  echo "podman-smoke: $CLIENT is not built; using $STATIC as the client"
  CLIENT=$STATIC
fi
echo "podman-smoke: client $CLIENT"

say "building $IMAGE from deploy/Dockerfile.scratch"
podman build -q -f deploy/Dockerfile.scratch -t "$IMAGE" .
podman image inspect "$IMAGE" --format 'entrypoint {{.Config.Entrypoint}} cmd {{.Config.Cmd}} user {{.Config.User}} size {{.Size}}'

http_flag=false
if "$STATIC" serve --help | grep -q -- --http-listen; then
  http_flag=true
fi
echo "podman-smoke: serve has --http-listen: $http_flag"

client_port() { echo $((BASE_PORT + 10 * $1)); }
peer_port() { echo $((BASE_PORT + 10 * $1 + 1)); }
http_port() { echo $((BASE_PORT + 10 * $1 + 2)); }
ep() { echo "127.0.0.1:$(client_port "$1")"; }
PEERS="0=127.0.0.1:$(peer_port 0),1=127.0.0.1:$(peer_port 1),2=127.0.0.1:$(peer_port 2)"

cleanup() {
  local rc=$?
  say "cleanup"
  for i in 0 1 2; do
    podman rm -f -t 0 "petkv-$i" "petkv-$i-init" >/dev/null 2>&1 || true
    podman volume rm -f "petkv-smoke-data-$i" >/dev/null 2>&1 || true
  done
  podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
  echo "podman-smoke: containers, volumes and image removed"
  exit "$rc"
}
trap cleanup EXIT
for i in 0 1 2; do # leftovers of an interrupted run
  podman rm -f -t 0 "petkv-$i" "petkv-$i-init" >/dev/null 2>&1 || true
  podman volume rm -f "petkv-smoke-data-$i" >/dev/null 2>&1 || true
done

# The options every container of pod N gets: its identity, volume, ports and the pod's
# security settings (non-root, read-only root filesystem).
pod_opts() {
  local i=$1
  local opts=(
    --network host --hostname "petkv-$i"
    # --read-only alone still mounts a writable tmpfs on /tmp, /run and /dev/shm; Kubernetes'
    # readOnlyRootFilesystem leaves nothing writable but the volume.
    --user 65532:65532 --read-only --read-only-tmpfs=false
    # :U chowns the fresh named volume to the container's user, as fsGroup does in Kubernetes.
    -v "petkv-smoke-data-$i:/var/lib/petkv:U"
    -e PETKV_DATA_DIR=/var/lib/petkv
    -e "PETKV_PEERS=$PEERS"
    -e "PETKV_CLIENT_LISTEN=127.0.0.1:$(client_port "$i")"
    -e "PETKV_PEER_LISTEN=127.0.0.1:$(peer_port "$i")"
    -e "PETKV_CLIENT_ADVERTISE=127.0.0.1:$(client_port "$i")"
    -e "PETKV_PEER_ADVERTISE=127.0.0.1:$(peer_port "$i")"
    -e "PETKV_SHUTDOWN_GRACE_MS=$GRACE_MS"
    -e PETKV_LOG_FORMAT=json
    -e PETKV_WAIT_TIMEOUT_SECS=120
  )
  if $http_flag; then
    opts+=(-e "PETKV_HTTP_LISTEN=127.0.0.1:$(http_port "$i")")
  fi
  printf '%s\n' "${opts[@]}"
}

start_pod() { # the serve container of pod N (detached)
  local i=$1 opts
  mapfile -t opts < <(pod_opts "$i")
  podman run -d --name "petkv-$i" "${opts[@]}" "$IMAGE" >/dev/null
}

status_field() { # status_field N FIELD -> the field of pod N's own status, or empty
  "$CLIENT" status --endpoints "$(ep "$1")" --output json --timeout-ms 2000 2>/dev/null |
    python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])" 2>/dev/null || true
}

wait_ready() { # wait_ready N...: until each pod reports ready (up to 60 s)
  local i deadline=$((SECONDS + 60))
  for i in "$@"; do
    until [[ $(status_field "$i" ready) == True ]]; do
      if ((SECONDS > deadline)); then
        echo "podman-smoke: petkv-$i is not ready after 60 s; its log:" >&2
        podman logs --tail 30 "petkv-$i" >&2 || true
        return 1
      fi
      sleep 0.5
    done
    echo "podman-smoke: petkv-$i ready (node id $(status_field "$i" node_id), role $(status_field "$i" role))"
  done
}

# -- start the set -------------------------------------------------------------------------
say "init containers of petkv-1 and petkv-2 (petkv wait-primary) start before petkv-0"
for i in 1 2; do
  mapfile -t opts < <(pod_opts "$i")
  podman run -d --name "petkv-$i-init" "${opts[@]}" "$IMAGE" wait-primary >/dev/null
done
sleep 2
for i in 1 2; do
  echo "petkv-$i-init: $(podman logs "petkv-$i-init" 2>&1 | tail -1)"
done

say "petkv-0: init (returns at once) and serve"
mapfile -t opts < <(pod_opts 0)
podman run --rm "${opts[@]}" "$IMAGE" wait-primary
start_pod 0
wait_ready 0

say "petkv-1 and petkv-2: their init containers finish, then serve"
for i in 1 2; do
  rc=$(podman wait "petkv-$i-init")
  echo "petkv-$i-init exited $rc: $(podman logs "petkv-$i-init" 2>&1 | tail -1)"
  [[ $rc == 0 ]]
  podman rm "petkv-$i-init" >/dev/null
  start_pod "$i"
done
wait_ready 0 1 2
"$CLIENT" members --endpoints "$(ep 0)"
members=$("$CLIENT" members --endpoints "$(ep 0)" --output json |
  python3 -c 'import json,sys; print(sum(1 for m in json.load(sys.stdin)["members"] if m["voter"]))')
echo "podman-smoke: voters: $members"
[[ $members == 3 ]]

# -- data ----------------------------------------------------------------------------------
say "a write through petkv-1, read (stale, local) on every pod"
"$CLIENT" put smoke "hello from podman" --endpoints "$(ep 1)"
for i in 0 1 2; do
  for _ in $(seq 50); do # a stale read may lag the commit by a heartbeat
    got=$("$CLIENT" get smoke --consistency stale --endpoints "$(ep "$i")" --output json |
      python3 -c 'import json,sys; kvs=json.load(sys.stdin)["kvs"]; print(kvs[0]["value"] if kvs else "")')
    [[ $got == "hello from podman" ]] && break
    sleep 0.1
  done
  echo "petkv-$i: smoke = '$got'"
  [[ $got == "hello from podman" ]]
done
if $http_flag; then
  code=$(python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:$(http_port 0)/healthz', timeout=2).status)" || echo failed)
  echo "petkv-0: GET /healthz -> $code"
fi

# -- SIGTERM and restart -------------------------------------------------------------------
id_before=$(status_field 0 node_id)
say "podman stop -t 30 petkv-0 (SIGTERM to PID 1; SIGKILL only after 30 s)"
t0=$EPOCHREALTIME
podman stop -t 30 petkv-0 >/dev/null
t1=$EPOCHREALTIME
exit_code=$(podman inspect petkv-0 --format '{{.State.ExitCode}}')
echo "podman-smoke: petkv-0 exit code $exit_code after $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }") s"
echo "podman-smoke: last lines of petkv-0's log:"
podman logs --tail 4 petkv-0 2>&1 | cut -c1-220
podman logs petkv-0 2>&1 | grep -q 'petkv node stopped'
[[ $exit_code == 0 ]]

say "the others carry on without petkv-0"
"$CLIENT" put smoke2 "written while petkv-0 was down" --endpoints "$(ep 2)"

say "podman start petkv-0 (same container, same volume)"
podman start petkv-0 >/dev/null
wait_ready 0
id_after=$(status_field 0 node_id)
echo "podman-smoke: petkv-0 node id before $id_before, after $id_after"
[[ -n $id_before && $id_before == "$id_after" ]]
for key in smoke smoke2; do
  for _ in $(seq 50); do
    got=$("$CLIENT" get "$key" --consistency stale --endpoints "$(ep 0)" --output json |
      python3 -c 'import json,sys; kvs=json.load(sys.stdin)["kvs"]; print(kvs[0]["value"] if kvs else "")')
    [[ -n $got ]] && break
    sleep 0.1
  done
  echo "petkv-0: $key = '$got'"
  [[ -n $got ]]
done
"$CLIENT" members --endpoints "$(ep 2)"

say "podman-smoke: PASSED"
