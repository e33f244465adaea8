#!/usr/bin/env bash
# Builds Lunar's image with buildah (vfs storage, chroot isolation: no container engine, no daemon) from a
# base image made here, for machines that reach Debian's mirror and the npm registry but no image registry.
#
#   test/image/build-image.sh [TAG]        (root; default tag localhost/lunar:<package version>)
#
# The base is Debian bookworm (debootstrap minbase) plus this machine's own Node and npm, tagged
# localhost/lunar-node-base:<node major> and cached in buildah's storage; the Dockerfile is built with
# NODE_IMAGE/RUNTIME_IMAGE pointing at it. Afterwards the script runs the image: `lunar --version`, the
# host tools the node plugin needs, and the OCI labels. Environment: LUNAR_IMAGE_MIRROR (Debian mirror),
# LUNAR_IMAGE_STORAGE (buildah --root, default /var/cache/lunar-image/storage).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mirror=${LUNAR_IMAGE_MIRROR:-http://deb.debian.org/debian}
storage=${LUNAR_IMAGE_STORAGE:-/var/cache/lunar-image/storage}
version=$(node -p "require('$ROOT/package.json').version")
tag=${1:-localhost/lunar:$version}
node_major=$(node -p 'process.versions.node.split(".")[0]')
base=localhost/lunar-node-base:$node_major
log() { printf '[image %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "needs root (debootstrap, buildah with chroot isolation)"; exit 1; }
for t in buildah debootstrap; do command -v "$t" >/dev/null || { log "$t is missing (apt-get install $t)"; exit 1; }; done
B=(buildah --root "$storage" --runroot /run/lunar-image --storage-driver vfs)

if ! "${B[@]}" inspect --type image "$base" >/dev/null 2>&1; then
	work=$(mktemp -d /var/tmp/lunar-base.XXXXXX)
	# debootstrap mounts /proc (and more) inside the rootfs: unmount before removing, never rm through a mount.
	cleanup_base() {
		findmnt -rn -o TARGET | grep "^$work/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
		findmnt -rn -o TARGET | grep -q "^$work/" || rm -rf "$work"
	}
	trap cleanup_base EXIT
	log "debootstrap bookworm (minbase) for $base"
	debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
		{ tail -20 "$work/debootstrap.log" "$work/rootfs/debootstrap/debootstrap.log" >&2 2>/dev/null; exit 1; }
	node_bin=$(readlink -f "$(command -v node)")
	npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
	install -D -m 0755 "$node_bin" "$work/rootfs/usr/local/bin/node"
	mkdir -p "$work/rootfs/usr/local/lib/node_modules" "$work/rootfs/usr/local/include"
	cp -a "$npm_dir" "$work/rootfs/usr/local/lib/node_modules/npm"
	# node-gyp needs the headers of this Node (include/node) next to the binary, as in the official image.
	for inc in /usr/include/node /usr/local/include/node; do
		[ -d "$inc" ] && { cp -a "$inc" "$work/rootfs/usr/local/include/node"; break; }
	done
	ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/rootfs/usr/local/bin/npm"
	ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/rootfs/usr/local/bin/npx"
	# This machine's trust store (registries may be reached through a TLS proxy with a local CA): the bundle
	# for npm in the build stage, the extra certificates so that ca-certificates keeps them at runtime.
	install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
	if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
		mkdir -p "$work/rootfs/usr/local/share/ca-certificates"
		cp /usr/local/share/ca-certificates/*.crt "$work/rootfs/usr/local/share/ca-certificates/"
	fi
	rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
	echo "deb $mirror bookworm main" >"$work/rootfs/etc/apt/sources.list"
	c=$("${B[@]}" from scratch)
	"${B[@]}" copy "$c" "$work/rootfs/" / >/dev/null
	"${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt --env npm_config_cafile=/etc/ssl/certs/ca-certificates.crt --cmd node "$c"
	"${B[@]}" commit --quiet "$c" "$base" >/dev/null
	"${B[@]}" rm "$c" >/dev/null
	cleanup_base
	trap - EXIT
	log "base $base committed"
fi

revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
log "building $tag from $base"
"${B[@]}" bud --isolation chroot --layers \
	--build-arg NODE_IMAGE="$base" --build-arg RUNTIME_IMAGE="$base" \
	--build-arg LUNAR_VERSION="$version" --build-arg LUNAR_REVISION="$revision" \
	-t "$tag" -f "$ROOT/Dockerfile" "$ROOT"

log "checking $tag"
c=$("${B[@]}" from "$tag")
trap '"${B[@]}" rm "$c" >/dev/null 2>&1 || true' EXIT
run() { "${B[@]}" run --isolation chroot "$c" -- "$@"; }
got=$(run /usr/local/bin/lunar --version)
case "$got" in *"$version"*) ;; *) log "lunar --version printed '$got', expected $version"; exit 1 ;; esac
for tool in iscsiadm multipath multipathd mkfs.ext4 mkfs.xfs resize2fs xfs_growfs blkid nsenter mount umount findmnt blockdev; do
	run sh -c "command -v $tool" >/dev/null || { log "$tool missing from the image"; exit 1; }
done
run sh -c 'test ! -d /opt/lunar/node_modules/typescript' || { log "dev dependencies in the runtime image"; exit 1; }
"${B[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "org.opencontainers.image.version"}}' "$tag" | grep -qx "$version" ||
	{ log "label org.opencontainers.image.version is not $version"; exit 1; }
"${B[@]}" inspect --type image --format '{{.OCIv1.Config.Entrypoint}}' "$tag" | grep -q /usr/local/bin/lunar ||
	{ log "entrypoint is not lunar"; exit 1; }
log "ok: $tag ($got); host tools present; production dependencies only"
