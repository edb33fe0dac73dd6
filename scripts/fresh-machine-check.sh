#!/usr/bin/env bash
# Runs the README's two commands (./scripts/demo.sh, then ./scripts/test.sh) on a fresh clone
# inside a clean Debian root, so that nothing installed by hand on this machine can make them
# pass: the root has only what a new user's Debian machine has (the Rust toolchain, the C
# compiler it links with, python3, git); every other install must happen in the project's
# own scripts. CI runs it (.ci/run).
#
# - The root is made once with debootstrap from the Debian mirror this machine's apt uses, and
#   cached (PETKV_FRESH_ROOT, default /var/cache/petkv/fresh-root-<suite>). Each run works on
#   an overlay of it, thrown away afterwards: what one run installs is gone for the next.
# - The Rust toolchain (rustup's home and cargo's bin) and cargo's download cache are mounted
#   in read-only (cargo writes its own copies into the run's overlay).
# - The clone is of this repository's committed HEAD, not the work tree.
#
# Usage: scripts/fresh-machine-check.sh [--only demo|test] [--keep]
# Needs root (chroot, mounts). Prints each command's wall time and exits non-zero if either fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
only=""
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "usage: $0 [--only demo|test] [--keep]" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" -ne 0 ]; then
  echo "fresh-machine-check: needs root (debootstrap, chroot, mounts)" >&2
  exit 2
fi

readonly SUITE=${PETKV_FRESH_SUITE:-bookworm}
readonly ROOT_CACHE=${PETKV_FRESH_ROOT:-/var/cache/petkv/fresh-root-$SUITE}
# What the README assumes a new user's machine has beside the Rust toolchain.
readonly BASE_PACKAGES=gcc,libc6-dev,python3,python3-pip,git,ca-certificates,procps
readonly RUSTUP_DIR=${RUSTUP_HOME:-$HOME/.rustup}
readonly CARGO_DIR=${CARGO_HOME:-$HOME/.cargo}
log() { printf 'fresh-machine-check: %s\n' "$*" >&2; }

# The mirror this machine's apt already uses (deb822 or one-line sources), so the check asks
# no other host.
debian_mirror() {
  local uri
  uri=$(grep -rhs '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
    | grep -v -e security -e updates | head -n 1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | grep -v -e security -e updates | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' || true)
  fi
  [ -n "$uri" ] || { log "cannot find a Debian mirror in /etc/apt"; return 1; }
  printf '%s\n' "$uri"
}

make_root() {
  [ -f "$ROOT_CACHE/.petkv-root-complete" ] && [ "$(cat "$ROOT_CACHE/.petkv-root-complete")" = "$BASE_PACKAGES" ] && return 0
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  local mirror
  mirror=$(debian_mirror)
  log "making a clean $SUITE root in $ROOT_CACHE from $mirror (once; cached)"
  rm -rf "$ROOT_CACHE" "$ROOT_CACHE.partial"
  mkdir -p "$(dirname "$ROOT_CACHE")"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$ROOT_CACHE.partial" "$mirror" >&2
  # apt inside the root uses the same mirror.
  printf 'deb %s %s main\n' "$mirror" "$SUITE" >"$ROOT_CACHE.partial/etc/apt/sources.list"
  mv "$ROOT_CACHE.partial" "$ROOT_CACHE"
  echo "$BASE_PACKAGES" >"$ROOT_CACHE/.petkv-root-complete"
}

work=""
mounts=()
cleanup() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount -l "${mounts[$i]}" 2>/dev/null || true
  done
  if [ -n "$work" ] && [ "$keep" -eq 0 ]; then
    rm -rf "$work"
  elif [ -n "$work" ]; then
    log "kept $work"
  fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

mount_overlay() { # lower upper-name target
  mkdir -p "$work/$2/upper" "$work/$2/work" "$3"
  mount -t overlay overlay -o "lowerdir=$1,upperdir=$work/$2/upper,workdir=$work/$2/work" "$3"
  mounts+=("$3")
}
bind() { # source target [ro]
  mkdir -p "$2"
  mount --rbind "$1" "$2"
  mount --make-rslave "$2"
  mounts+=("$2")
  if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

make_root
work=$(mktemp -d "${TMPDIR:-/var/tmp}/petkv-fresh.XXXXXX")
root=$work/root
mount_overlay "$ROOT_CACHE" root "$root"
mkdir -p "$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/run"
mount -t proc proc "$root/proc"; mounts+=("$root/proc")
bind /sys "$root/sys"
bind /dev "$root/dev"
mount -t tmpfs tmpfs "$root/tmp"; mounts+=("$root/tmp")
mount -t tmpfs tmpfs "$root/run"; mounts+=("$root/run")
# What a Debian installer writes and debootstrap does not: a machine's own name and hosts file.
[ -e "$root/etc/hostname" ] || echo petkv-fresh >"$root/etc/hostname"
[ -e "$root/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n127.0.1.1\tpetkv-fresh\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# The machine's network as it is (not an install step): its resolver, and the certificate
# authorities it trusts (a network that inspects TLS adds its own), for the package registries.
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
if [ -d /usr/local/share/ca-certificates ]; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp -r /usr/local/share/ca-certificates/. "$root/usr/local/share/ca-certificates/"
fi
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
network_env=()
for var in SSL_CERT_FILE SSL_CERT_DIR CURL_CA_BUNDLE REQUESTS_CA_BUNDLE PIP_CERT GIT_SSL_CAINFO \
  CARGO_HTTP_CAINFO http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY \
  PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_DEFAULT_TIMEOUT; do
  if [ -n "${!var:-}" ]; then network_env+=("$var=${!var}"); fi
done
# The toolchain, read-only; cargo's home is the root's own, with the download cache of this
# machine under it as a read-only lower layer.
bind "$RUSTUP_DIR" "$root/opt/rustup" ro
bind "$CARGO_DIR/bin" "$root/opt/cargo-bin" ro
mkdir -p "$root/root/.cargo"
if [ -d "$CARGO_DIR/registry" ]; then
  mount_overlay "$CARGO_DIR/registry" cargo-registry "$root/root/.cargo/registry"
fi
git clone --quiet --no-hardlinks "$repo" "$root/work/petkv"
# shared/ beside the clone, read-only, as CI lays it out (third-party sources for LazyFS).
if [ -d "$repo/../shared" ]; then
  bind "$(cd "$repo/../shared" && pwd)" "$root/work/shared" ro
fi
log "clone of $(git -C "$repo" rev-parse --short HEAD) in a clean $SUITE root ($work)"

in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root USER=root LANG=C.UTF-8 TERM=dumb CI="${CI:-}" "${network_env[@]}" \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo \
    PATH=/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c "cd /work/petkv && $1"
}

status=0
summary=()
run_step() { # name command
  local started rc=0
  started=$(date +%s)
  log "running $2"
  in_root "$2" || rc=$?
  local took=$(($(date +%s) - started))
  summary+=("$2: exit $rc after ${took} s")
  [ "$rc" -eq 0 ] || status=1
}
[ "$only" = test ] || run_step demo ./scripts/demo.sh
[ "$only" = demo ] || run_step test ./scripts/test.sh
log "in a clean $SUITE root with only the Rust toolchain, gcc, python3 and git:"
for line in "${summary[@]}"; do log "  $line"; done
exit "$status"
