#!/bin/bash
# Builds the Lunar test guest: Debian bookworm (Debian packages only) with the kernel iSCSI initiator
# (open-iscsi), dm-multipath (multipath-tools), mkfs tools, the host's Node binary, and a control agent on a
# virtio-serial port. Output (cached OUTSIDE the repo, keyed on a hash of this script, guest-files/ and the
# Node binary):
#   ${LUNAR_GUEST_CACHE:-/var/cache/lunar-guest}/<key>/{vmlinuz,root.img,manifest.txt}
# Prints that directory on the last line of stdout. A second run with the same inputs reuses it.
# Facts behind every choice: /work/shared/notes/guest-initiator-recipe.md (kernel, no initramfs, NVMe root,
# trimmed modules and systemd, iscsid.conf values). Needs root (debootstrap, chroot).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache_root=${LUNAR_GUEST_CACHE:-/var/cache/lunar-guest}
mirror=${LUNAR_GUEST_MIRROR:-http://deb.debian.org/debian}
log() { echo "build-guest: $*" >&2; }

# --- host needs (CI starts from a fresh machine) ---
need_pkgs=()
command -v debootstrap >/dev/null || need_pkgs+=(debootstrap)
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
command -v mkfs.ext4 >/dev/null || need_pkgs+=(e2fsprogs)
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v tgtd >/dev/null || need_pkgs+=(tgt)
command -v sha256sum >/dev/null || need_pkgs+=(coreutils)
command -v flock >/dev/null || need_pkgs+=(util-linux)
if [ ${#need_pkgs[@]} -gt 0 ]; then
	log "installing host packages: ${need_pkgs[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2 ||
		{ apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need_pkgs[@]}" >&2; }
fi

node_bin=$(readlink -f "$(command -v node)")
node_version=$(node -v)
key=$( {
	cat "$here/build-guest.sh"
	(cd "$here/guest-files" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
	echo "$node_version $(stat -c %s "$node_bin")"
} | sha256sum | cut -c1-16)
out="$cache_root/$key"

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9 # one build at a time; a waiting run then finds the finished image
if [ -f "$out/complete" ]; then
	log "cached guest: $out"
	echo "$out"
	exit 0
fi

t0=$(date +%s)
work=$(mktemp -d "$cache_root/.build-$key.XXXXXX")
chmod 0755 "$work" # apt-get download drops privileges to _apt
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"

log "debootstrap bookworm (minbase) into $root"
debootstrap --variant=minbase \
	--include=systemd-sysv,udev,kmod,iproute2,procps,open-iscsi,multipath-tools,dmsetup,e2fsprogs,xfsprogs,util-linux,coreutils \
	bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }

log "kernel: linux-image-cloud-amd64"
resolve_kernel() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
kpkg=$(resolve_kernel)
if [ -z "$kpkg" ]; then apt-get update >&2; kpkg=$(resolve_kernel); fi
[ -n "$kpkg" ] || { log "cannot resolve linux-image-cloud-amd64"; exit 1; }
(cd "$work" && apt-get download "$kpkg" >&2)
dpkg-deb -x "$work"/"$kpkg"_*.deb "$work/kernel"
kver=$(ls "$work/kernel/lib/modules")
cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
mkdir -p "$root/lib/modules"
cp -a "$work/kernel/lib/modules/$kver" "$root/lib/modules/"

# depmod inside the chroot (the host may have none), then keep only the modules the bed needs.
chroot "$root" depmod -a "$kver"
keep="$work/keep-modules"
: >"$keep"
for m in virtio_pci virtio_blk virtio_net virtio_console sd_mod sg iscsi_tcp dm_multipath dm_round_robin \
	dm_service_time dm_queue_length xfs crc32c_generic crc32c-intel; do
	# modprobe --show-depends takes one module (further words are module parameters)
	chroot "$root" modprobe -S "$kver" --show-depends "$m" 2>/dev/null | awk '$1=="insmod"{print $2}' >>"$keep" || true
done
sed -i "s#^#$root#" "$keep"
find "$root/lib/modules/$kver/kernel" -name '*.ko*' | grep -vxF -f "$keep" | xargs -r rm -f
find "$root/lib/modules/$kver/kernel" -type d -empty -delete
chroot "$root" depmod -a "$kver"
log "kept $(wc -l <"$keep") module files"

log "configuration overlay"
cp -a "$here/guest-files/." "$root/"
chmod 0755 "$root/usr/local/sbin/lunar-agent"
# The host's Node (official single binary; libc/libstdc++/libm/libgcc_s come with minbase) for later
# node-plugin tests. Any shared library ldd names that the guest lacks is copied too.
install -m 0755 "$node_bin" "$root/usr/local/bin/node"
ldd "$node_bin" | awk '/=> \//{print $3}' | while read -r lib; do
	[ -e "$root$lib" ] || [ -e "$root/usr$lib" ] || { log "copying $lib"; install -D "$lib" "$root$lib"; }
done

# iscsid.conf values from the recipe (§5); the test also sets them per node record.
conf="$root/etc/iscsi/iscsid.conf"
setconf() { # key value
	if grep -qE "^#? *$1 *=" "$conf"; then sed -i -E "s|^#? *$1 *=.*|$1 = $2|" "$conf"; else echo "$1 = $2" >>"$conf"; fi
}
setconf node.startup manual
setconf node.session.timeo.replacement_timeout 5
setconf node.conn\\[0\\].timeo.noop_out_interval 1
setconf node.conn\\[0\\].timeo.noop_out_timeout 1
setconf node.conn\\[0\\].timeo.login_timeout 5
setconf node.conn\\[0\\].timeo.logout_timeout 5
setconf node.session.err_timeo.abort_timeout 5
setconf node.session.err_timeo.lu_reset_timeout 10
setconf node.session.err_timeo.tgt_reset_timeout 10
setconf node.session.initial_login_retry_max 2
echo "InitiatorName=iqn.2024-01.io.lunar.guest:default" >"$root/etc/iscsi/initiatorname.iscsi"
echo lunar-guest >"$root/etc/hostname"
echo "LABEL=root / ext4 rw,noatime 0 1" >"$root/etc/fstab"

chroot "$root" /bin/bash -euc '
	passwd -d root >/dev/null
	systemctl set-default multi-user.target >/dev/null
	systemctl enable lunar-agent.service >/dev/null 2>&1
	systemctl disable open-iscsi.service iscsid.service >/dev/null 2>&1 || true
	systemctl enable iscsid.socket multipathd.service >/dev/null 2>&1 || true
	for u in getty.target getty-static.service serial-getty@ttyS0.service systemd-update-utmp.service \
		systemd-update-utmp-runlevel.service proc-sys-fs-binfmt_misc.automount systemd-binfmt.service \
		sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount dev-mqueue.mount \
		sys-fs-fuse-connections.mount systemd-journal-flush.service systemd-tmpfiles-clean.timer \
		dpkg-db-backup.timer apt-daily.timer apt-daily-upgrade.timer systemd-networkd-wait-online.service \
		systemd-pstore.service e2scrub_all.timer e2scrub_reap.service fstrim.timer \
		multipathd.socket open-iscsi.service; do
		systemctl mask "$u" >/dev/null 2>&1 || true
	done
'
rm -rf "$root"/usr/share/{doc,man,info,locale}/* "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*

{
	echo "built $(date -u +%FT%TZ) key $key"
	echo "kernel $kpkg ($kver)"
	echo "node $node_version (host binary $node_bin)"
	chroot "$root" dpkg-query -W -f '${Package} ${Version}\n'
} >"$work/manifest.txt"

size_mb=$(($(du -sm "$root" | cut -f1) + 300))
log "root.img ${size_mb} MiB (mkfs.ext4 -d)"
mkfs.ext4 -q -L root -E lazy_itable_init=0,lazy_journal_init=0 -d "$root" "$work/root.img" "${size_mb}M" >&2
rm -rf "$root" "$work/kernel" "$work"/*.deb

touch "$work/complete"
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
# Keep the two newest images (a running QEMU keeps an open file alive if its image goes).
ls -1dt "$cache_root"/*/ 2>/dev/null | tail -n +3 | xargs -r rm -rf
log "built $out in $(($(date +%s) - t0)) s"
echo "$out"
