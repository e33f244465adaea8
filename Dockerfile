# Lunar's one image: `lunar serve` (controller: CSI Identity + Controller and the embedded iSCSI target) and
# `lunar node` (the CSI node plugin) run from it; the entrypoint is the `lunar` command.
#
# Build:   buildah bud -t lunar:0.1.0 .      (or docker build / podman build)
# Offline: build from bases already in local storage, e.g.
#          --build-arg NODE_IMAGE=localhost/node-base:22 --build-arg RUNTIME_IMAGE=localhost/node-base:22
#
# Stages: `build` has the dev dependencies and the native addon's toolchain (gcc and g++, make, python3 for
# node-gyp, liburing-dev: binding.gyp links liburing statically, so the runtime needs no liburing package
# and the addon gets its io_uring path) and compiles src/ and native/; `runtime` gets production dependencies only, the compiled
# output, the addon, proto/ and the host tools the node plugin runs in direct mode (--host-exec direct):
# open-iscsi's iscsiadm, multipath-tools, e2fsprogs, xfsprogs, util-linux (blkid, mount, nsenter) and
# kmod. In nsenter mode (the DaemonSet's default) the host's own tools run instead.

ARG NODE_IMAGE=docker.io/library/node:22-bookworm-slim
ARG RUNTIME_IMAGE=${NODE_IMAGE}

FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ libc6-dev make python3 liburing-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first (their layer is reused while only the sources change). `npm ci` runs the package's
# install script, which builds native/lunar_native.c with node-gyp against this Node's headers.
COPY package.json package-lock.json binding.gyp ./
COPY native ./native
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY proto ./proto
COPY src ./src
# tsconfig.json also includes test/ and bench/, which are not in the build context: only src/ compiles.
RUN npx tsc -p tsconfig.json \
 && npm prune --omit=dev --no-audit --no-fund \
 && test -f build/Release/lunar_native.node \
 && nm build/Release/lunar_native.node | grep -q ' T io_uring_queue_init' \
 && ! ldd build/Release/lunar_native.node | grep -q liburing \
 && test -f dist/src/cli.js

FROM ${RUNTIME_IMAGE} AS runtime
ARG LUNAR_VERSION=0.1.0
ARG LUNAR_SOURCE=unknown
ARG LUNAR_REVISION=unknown
LABEL org.opencontainers.image.title="lunar" \
      org.opencontainers.image.description="Kubernetes CSI driver with its own iSCSI target" \
      org.opencontainers.image.version="${LUNAR_VERSION}" \
      org.opencontainers.image.source="${LUNAR_SOURCE}" \
      org.opencontainers.image.revision="${LUNAR_REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      open-iscsi multipath-tools e2fsprogs xfsprogs util-linux mount kmod ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lunar \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/lunar --no-create-home --shell /usr/sbin/nologin lunar \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/lunar
WORKDIR /opt/lunar
COPY --from=build /src/package.json /src/package-lock.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/build/Release/lunar_native.node ./build/Release/lunar_native.node
COPY --from=build /src/proto ./proto
COPY --from=build /src/dist/src ./dist/src
RUN chmod 0755 dist/src/cli.js && ln -s /opt/lunar/dist/src/cli.js /usr/local/bin/lunar && lunar --version
# libuv's pool sized for the iSCSI queue depth (the `lunar` shebang sets it too; explicit here).
ENV NODE_ENV=production UV_THREADPOOL_SIZE=32 LUNAR_DATA_DIR=/var/lib/lunar
# The image's default user is root: the node plugin must be (privileged, host mounts). The controller's
# pod spec runs it as 10001 (`lunar`) where its data directory allows.
ENTRYPOINT ["/usr/local/bin/lunar"]
CMD ["--help"]
