#!/usr/bin/env bash
# Builds LazyFS (the FUSE filesystem Jepsen uses to simulate power loss) fully offline from
# the sources in shared/third-party-src/ and prints the absolute path of the `lazyfs` binary
# as the only line on stdout (progress goes to stderr):   LAZYFS=$(scripts/install-lazyfs.sh)
#
#   PETKV_THIRD_PARTY_SRC  the tarballs (default: <repo>/../shared/third-party-src; only read)
#   PETKV_LAZYFS_DIR       where to unpack and build (default: <repo>/target/lazyfs)
#   PETKV_LAZYFS_JOBS      parallel compile jobs (default: nproc)
# Installs the missing Debian packages (g++ cmake make libfuse3-dev fuse3) when root, else
# exits 2 naming them. Re-runs are instant: the build is kept while a stamp (sha256 of the
# three tarballs plus a recipe number) matches. Exit 1 on any other failure.
#
# ---- Running it (checked by hand against this build) -------------------------------------
# Config (TOML; [faults] and [cache] are required):
#     [faults]
#     fifo_path="/tmp/lfs/faults.fifo"        # lazyfs mkfifo()s it (an existing FIFO is reused)
#     #fifo_path_completed="/tmp/lfs/done.fifo"  # optional, see below
#     [cache]
#     apply_eviction=false
#     [cache.simple]
#     custom_size="256mb"                     # gb/mb/kb; preallocated at start (RSS, ~0.2 s)
#     blocks_per_page=1
#     [filesystem]                            # (the README's "[file system]" is ignored)
#     log_all_operations=false
#     logfile=""                              # "" = log to stdout only
# Mount (as root; the backing dir and the mount point must exist; absolute paths):
#     lazyfs /mnt/point --config-path /path/config.toml \
#            -o allow_other -o modules=subdir -o subdir=/abs/backing/dir -f &
#   -f keeps it in the foreground (keep its pid); without -f it daemonizes. Without
#   --config-path it reads ./config/default.toml and aborts if that is missing; it also
#   ignores a --config-path that contains "-o" in any case (/tmp/petkv-harness-Oa3x/… too):
#   give a relative path from its working directory. allow_other
#   needs `user_allow_other` in /etc/fuse.conf only for non-root; /dev/fuse must exist.
#   Ready when `mountpoint -q /mnt/point` succeeds: poll it (the fault FIFO is served from
#   then on too).
# Unmount: `fusermount3 -u /mnt/point` (`-uz` if something still uses it). lazyfs then exits
#   on SIGABRT ("terminate called without an active exception"), so ignore its exit status.
#   After lazyfs died (kill -9 or a crash:: fault) the mount answers "Transport endpoint is
#   not connected" until `fusermount3 -u` (same command) removes it.
# FIFO protocol: one command per write(), ending in "\n": lazyfs reads <=100 bytes at a time
#   and replaces the last byte with NUL, so two commands in one read are garbage.
#     echo lazyfs::clear-cache > $fifo        # drop every byte not yet fsync'd
#     echo lazyfs::cache-checkpoint > $fifo   # write all cached data to the backing dir
#     echo lazyfs::unsynced-data-report > $fifo ; lazyfs::display-cache-usage ; lazyfs::help
#     echo "lazyfs::crash::timing=before|after::op=write::from_rgx=REGEX[::to_rgx=REGEX]" \
#         > $fifo                             # lazyfs SIGKILLs itself at the next such op
#     echo "lazyfs::torn-op::file=PATH::parts=3::persist=1,3" > $fifo  (or parts_bytes=a,b,c)
#     echo "lazyfs::torn-seq::op=write::file=PATH::persist=1,4" > $fifo
#   Commands are asynchronous: echo returns before the cache is cleared. For a synchronous
#   clear set fifo_path_completed and read a "finished::clear-cache" line from it per
#   command; lazyfs opens that FIFO write-only when mounting, so its fault thread waits
#   (commands queue) until a reader has it open: open it read-write (exec 7<>done.fifo)
#   before mounting and keep it open. Writing the command FIFO while no lazyfs runs blocks
#   forever (no reader): use `timeout`.
# What is lost (clear-cache, kill -9 of lazyfs, a crash:: fault, and also a clean unmount):
#   file data, appends and truncates since that file's last fsync/fdatasync (an unsynced new
#   file comes back empty). NOT lost: directory operations (create, mkdir, rename, unlink) go
#   straight to the backing dir, fsync'd directory or not. So a "power loss" is:
#   kill -9 the node, `kill -9` lazyfs (or clear-cache), `fusermount3 -u`, mount again.
# Also: fsync through LazyFS writes the backing file but does not fsync it (cheap: ~0.1 ms);
#   fsync on a directory is a no-op that succeeds; rename with flags (renameat2
#   RENAME_NOREPLACE/EXCHANGE) fails with EINVAL; plain rename works.
set -euo pipefail

# Everything but the final path goes to stderr.
exec 3>&1 1>&2

die() { echo "install-lazyfs: $*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src=${PETKV_THIRD_PARTY_SRC:-$repo/../shared/third-party-src}
dir=${PETKV_LAZYFS_DIR:-$repo/target/lazyfs}
jobs=${PETKV_LAZYFS_JOBS:-$(nproc)}
# Bump when the build recipe below changes, so existing builds are redone.
recipe=1

tarballs=(lazyfs.tar.gz toml11-3.7.1.tar.gz spdlog-1.10.0.tar.gz)
[ -d "$src" ] || die "third-party sources not found at $src (set PETKV_THIRD_PARTY_SRC)"
src=$(cd "$src" && pwd)
for t in "${tarballs[@]}"; do
  [ -r "$src/$t" ] || die "missing $src/$t"
done

# --- Debian packages ----------------------------------------------------------------------
pkgs=(g++ cmake make libfuse3-dev fuse3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-lazyfs: missing Debian packages: ${missing[*]}" >&2
    echo "install-lazyfs: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 2
  fi
  echo "install-lazyfs: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" || die "apt-get install ${missing[*]} failed"
fi

# --- Build (serialised between concurrent callers) --------------------------------------
mkdir -p "$dir" || die "cannot create $dir"
dir=$(cd "$dir" && pwd)
exec 9>"$dir/.lock"
flock 9

tree=$dir/lazyfs
bin=$tree/lazyfs/build/lazyfs
stamp_file=$dir/stamp
stamp="recipe=$recipe $(cd "$src" && sha256sum "${tarballs[@]}" | awk '{printf "%s:%s ", $2, $1}')"

if [ -x "$bin" ] && [ -e "$tree/libs/libpcache/build/libpcache.so.0" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
  echo "install-lazyfs: up to date" >&2
  echo "$bin" >&3
  exit 0
fi

start=$(date +%s)
echo "install-lazyfs: building LazyFS in $tree (-j$jobs)" >&2
rm -f "$stamp_file"
rm -rf "$tree"
tar -xzf "$src/lazyfs.tar.gz" -C "$dir" || die "cannot unpack lazyfs.tar.gz"
[ -f "$tree/libs/libpcache/CMakeLists.txt" ] || die "lazyfs.tar.gz did not unpack to $tree"

# libpcache pulls toml11 and spdlog with FetchContent: put them where it would.
pcache=$tree/libs/libpcache
deps=$pcache/build/_deps
mkdir -p "$deps/toml-src" "$deps/spdlog-src"
tar -xzf "$src/toml11-3.7.1.tar.gz" -C "$deps/toml-src" --strip-components=1 || die "cannot unpack toml11"
tar -xzf "$src/spdlog-1.10.0.tar.gz" -C "$deps/spdlog-src" --strip-components=1 || die "cannot unpack spdlog"

# Upstream builds lazyfs with no CMAKE_BUILD_TYPE (-O0); libpcache gets Release from spdlog.
common=(-DCMAKE_CXX_FLAGS=-O2 -DCMAKE_C_FLAGS=-O2)
cmake -S "$pcache" -B "$pcache/build" "${common[@]}" \
  -DFETCHCONTENT_FULLY_DISCONNECTED=ON \
  -DFETCHCONTENT_SOURCE_DIR_TOML="$deps/toml-src" \
  -DFETCHCONTENT_SOURCE_DIR_SPDLOG="$deps/spdlog-src" \
  || die "cmake configure of libpcache failed"
cmake --build "$pcache/build" -j "$jobs" || die "build of libpcache failed"

# lazyfs links ../libs/libpcache/build/libpcache.so; the rpath lets it find it at run time
# wherever the tree is (it is not installed system-wide).
cmake -S "$tree/lazyfs" -B "$tree/lazyfs/build" "${common[@]}" \
  -DLAZYFS_BUILD_TESTS=OFF \
  '-DCMAKE_BUILD_RPATH=$ORIGIN/../../libs/libpcache/build' \
  || die "cmake configure of lazyfs failed"
cmake --build "$tree/lazyfs/build" -j "$jobs" || die "build of lazyfs failed"

[ -x "$bin" ] || die "build finished but $bin is missing"
if ldd "$bin" | grep -q 'not found'; then
  ldd "$bin" >&2
  die "$bin has unresolved shared libraries"
fi
[ -e /dev/fuse ] || echo "install-lazyfs: warning: /dev/fuse is missing; mounting will fail" >&2

echo "$stamp" >"$stamp_file"
echo "install-lazyfs: built in $(($(date +%s) - start))s" >&2
echo "$bin" >&3
