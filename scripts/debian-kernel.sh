#!/usr/bin/env bash
# Fetches the Debian cloud kernel and leaves, in OUTDIR (default: build/linux under the repo root):
#   bzImage   the kernel image as Debian ships it (/boot/vmlinuz-*)
#   vmlinux   the uncompressed ELF inside it (the payload is LZ4 legacy format)
#   VERSION   the kernel release, e.g. 6.1.0-56-cloud-amd64
# Used by the Linux boot tests and by bench/. Progress goes to stderr.
#
# Exit status: 0 success (or valid cached copy), 1 unexpected failure (e.g. a payload that does not
# decompress to an ELF), 2 the kernel cannot be had here (no package, no apt access, missing tool):
# tests treat 2 as SKIP and print the reason given on stderr.
set -euo pipefail

log() { printf 'debian-kernel: %s\n' "$*" >&2; }
die() { log "error: $1"; exit "${2:-1}"; }
unavailable() { log "unavailable: $*"; exit 2; }

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
outdir=${1:-$repo_root/build/linux}
meta_pkg=${AZOTE_KERNEL_META_PKG:-linux-image-cloud-amd64} # override only to test the failure path

# --- small binary readers (little-endian), no python needed -------------------------------------
# u8/u16/u32/u64 FILE OFFSET -> decimal on stdout
rd() { od -An -t "u$1" -j "$3" -N "$1" -- "$2" | tr -d ' \n'; }
u8() { rd 1 "$@"; }
u16() { rd 2 "$@"; }
u32() { rd 4 "$@"; }
u64() { rd 8 "$@"; }
fsize() { stat -c %s -- "$1"; }

# A bzImage is valid if it carries the "HdrS" setup-header magic at 0x202 with protocol >= 2.06.
bzimage_ok() {
  local f=$1
  [[ -f $f ]] || return 1
  (($(fsize "$f") > 0x400)) || return 1
  [[ $(u32 "$f" 0x202) == 1400005704 ]] || return 1 # "HdrS"
  (($(u16 "$f" 0x206) >= 0x206))
}

# A vmlinux is valid if it is an ELF64 x86-64 executable and the file holds everything its headers
# point at (program segments and the section header table), i.e. it was not truncated.
vmlinux_ok() {
  local f=$1
  [[ -f $f ]] || return 1
  local size
  size=$(fsize "$f")
  ((size > 64)) || return 1
  [[ $(u32 "$f" 0) == 1179403647 ]] || return 1 # 7f 'E' 'L' 'F'
  [[ $(u8 "$f" 4) == 2 && $(u8 "$f" 5) == 1 ]] || return 1 # ELFCLASS64, little endian
  [[ $(u16 "$f" 16) == 2 && $(u16 "$f" 18) == 62 ]] || return 1 # ET_EXEC, EM_X86_64
  local phoff phentsize phnum shoff shentsize shnum end i off filesz
  phoff=$(u64 "$f" 32); shoff=$(u64 "$f" 40)
  phentsize=$(u16 "$f" 54); phnum=$(u16 "$f" 56)
  shentsize=$(u16 "$f" 58); shnum=$(u16 "$f" 60)
  ((phentsize == 56 && phnum > 0 && phnum < 64)) || return 1
  end=$((shoff + shnum * shentsize))
  ((end <= size)) || return 1
  ((phoff + phnum * phentsize <= size)) || return 1
  for ((i = 0; i < phnum; i++)); do
    off=$(u64 "$f" $((phoff + i * 56 + 8)))
    filesz=$(u64 "$f" $((phoff + i * 56 + 32)))
    ((off + filesz <= size)) || return 1
  done
  return 0
}

# Prints the physical PVH entry point if the ELF has a Xen note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY).
pvh_entry() {
  command -v readelf >/dev/null || return 1
  # readelf prints the description bytes on the note's line (-W) or the next one; they are the
  # little-endian bytes of the entry address.
  readelf -n -- "$1" 2>/dev/null | awk '
    function emit(line,   n, b, i, v) {
      sub(/.*description data:[ \t]*/, "", line); n = split(line, b, /[ \t]+/)
      v = ""; for (i = n; i >= 1; i--) if (b[i] != "") v = v b[i]
      if (!found) print "0x" v; found = 1
    }
    /^ *Xen / && /\(0x00000012\)/ { if ($0 ~ /description data:/) emit($0); want = 1; next }
    want && /description data:/ { emit($0) }
    { want = 0 }
    END { exit found ? 0 : 1 }'
}

report() {
  local entry
  log "bzImage: $outdir/bzImage ($(fsize "$outdir/bzImage") bytes)"
  log "vmlinux: $outdir/vmlinux ($(fsize "$outdir/vmlinux") bytes)"
  log "version: $(head -n1 "$outdir/VERSION" 2>/dev/null || echo unknown)"
  if entry=$(pvh_entry "$outdir/vmlinux"); then
    log "PVH: Xen note type 0x12 present, 32-bit entry at $entry"
  else
    log "PVH: no Xen note type 0x12 found (vmlinux cannot be booted through PVH)"
  fi
}

# --- cache check -----------------------------------------------------------------------------------
if bzimage_ok "$outdir/bzImage" && vmlinux_ok "$outdir/vmlinux" && [[ -s $outdir/VERSION ]]; then
  log "cached copy in $outdir is valid"
  report
  exit 0
fi

for tool in apt-cache apt-get dpkg-deb tar lz4 od stat; do
  command -v "$tool" >/dev/null || unavailable "the '$tool' tool is not installed (run scripts/deps.sh)"
done

mkdir -p -- "$outdir" || die "cannot create $outdir"
outdir=$(cd "$outdir" && pwd)

# Two tests may run this at once (ctest -j): one does the work, the other waits and finds the cache.
exec 9>"$outdir/.lock"
if command -v flock >/dev/null; then
  flock 9
  if bzimage_ok "$outdir/bzImage" && vmlinux_ok "$outdir/vmlinux" && [[ -s $outdir/VERSION ]]; then
    log "cached copy in $outdir is valid (made by a concurrent run)"
    report
    exit 0
  fi
fi

work=$(mktemp -d "$outdir/.work.XXXXXX")
trap 'rm -rf -- "$work"' EXIT

# --- 1. which versioned package does the meta package point at? -----------------------------------
resolve_pkg() {
  apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances "$meta_pkg" 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}
pkg=$(resolve_pkg || true)
if [[ -z $pkg ]]; then
  log "apt-cache does not know $meta_pkg; refreshing the package lists"
  if [[ $(id -u) -ne 0 ]]; then
    unavailable "$meta_pkg is not in the apt cache and apt-get update needs root"
  fi
  apt-get update -q >"$work/apt-update.log" 2>&1 || {
    tail -n 3 "$work/apt-update.log" >&2
    unavailable "apt-get update failed (no access to a Debian mirror?)"
  }
  pkg=$(resolve_pkg || true)
  [[ -n $pkg ]] || unavailable "no package $meta_pkg in the configured apt sources"
fi
pkg_version=$(apt-cache policy "$pkg" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }')
log "$meta_pkg -> $pkg ${pkg_version:+($pkg_version)}"

# --- 2. download and unpack only /boot ---------------------------------------------------------------
log "downloading $pkg"
if ! (cd "$work" && apt-get download -q "$pkg" >"$work/download.log" 2>&1); then
  grep -v '^W: Download is performed unsandboxed' "$work/download.log" | tail -n 3 >&2 || true
  unavailable "apt-get download $pkg failed"
fi
deb=$(find "$work" -maxdepth 1 -name '*.deb' -print -quit)
[[ -n $deb ]] || unavailable "apt-get download $pkg produced no .deb"
log "downloaded $(basename "$deb") ($(fsize "$deb") bytes)"

# The package also carries ~100 MB of modules; unpacking only ./boot/ from its data archive is what
# `dpkg-deb -x` would give us for that directory, without writing the rest.
mkdir -p "$work/root"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/root" --wildcards './boot/vmlinuz-*' ||
  die "cannot unpack boot/vmlinuz-* from $(basename "$deb")"
vmlinuz=$(find "$work/root/boot" -maxdepth 1 -name 'vmlinuz-*' -print -quit)
[[ -n $vmlinuz ]] || die "$(basename "$deb") has no boot/vmlinuz-*"
bzimage_ok "$vmlinuz" || die "$(basename "$vmlinuz") is not a bzImage (no HdrS setup header)"
release=${vmlinuz##*/vmlinuz-}
log "kernel image boot/vmlinuz-$release ($(fsize "$vmlinuz") bytes)"

# --- 3. extract the ELF: find the LZ4 legacy payload and decompress it ------------------------------
# Candidate offsets: the one the setup header names (payload_offset at 0x248, relative to the start
# of the protected-mode code, which follows (setup_sects + 1) * 512 bytes of real-mode code), then
# every occurrence of the LZ4 legacy magic 02 21 4c 18 in file order.
setup_sects=$(u8 "$vmlinuz" 0x1f1)
((setup_sects == 0)) && setup_sects=4
candidates=()
hdr_off=$(((setup_sects + 1) * 512 + $(u32 "$vmlinuz" 0x248)))
if [[ $(u32 "$vmlinuz" "$hdr_off" 2>/dev/null) == 407642370 ]]; then # 0x184c2102 LE
  candidates+=("$hdr_off")
fi
while IFS=: read -r off _; do
  [[ $off == "$hdr_off" ]] || candidates+=("$off")
done < <(LC_ALL=C grep -obUaP '\x02\x21\x4c\x18' -- "$vmlinuz" || true)
((${#candidates[@]} > 0)) || die "no LZ4 legacy magic (02 21 4c 18) in $(basename "$vmlinuz"); not an LZ4 kernel?"

found=
for off in "${candidates[@]}"; do
  # lz4 exits non-zero on the bytes after the payload (the appended size, padding); what it wrote
  # before that is the payload, so the exit status is not the test: the ELF check below is.
  tail -c +$((off + 1)) -- "$vmlinuz" | lz4 -d -c >"$work/vmlinux" 2>/dev/null || true
  if vmlinux_ok "$work/vmlinux"; then
    log "LZ4 payload at offset $off decompressed to an ELF ($(fsize "$work/vmlinux") bytes)"
    found=1
    break
  fi
done
[[ -n $found ]] || die "none of the ${#candidates[@]} LZ4 magic offsets decompressed to a complete x86-64 ELF"

# Kernel version string from the setup header (kernel_version at 0x20e points 0x200 before it).
banner=$(dd if="$vmlinuz" bs=1 skip=$(($(u16 "$vmlinuz" 0x20e) + 0x200)) count=256 status=none |
  tr '\0' '\n' | sed -n 1p)
[[ ${banner%% *} == "$release" ]] || log "note: setup header says '${banner%% *}', file name says '$release'"

# --- 4. install atomically -----------------------------------------------------------------------------
cp -- "$vmlinuz" "$work/bzImage"
printf '%s\n' "$release" >"$work/VERSION"
mv -f -- "$work/bzImage" "$outdir/bzImage"
mv -f -- "$work/vmlinux" "$outdir/vmlinux"
mv -f -- "$work/VERSION" "$outdir/VERSION"
log "kernel: $banner"
report
