/*
 * lunar_native: the few Linux file and socket primitives Lunar's data path needs and Node.js lacks.
 *
 * Why hand-written: Node's fs has no fallocate(2) (PUNCH_HOLE for UNMAP / WRITE SAME UNMAP, preallocation)
 * and no lseek(2) SEEK_DATA / SEEK_HOLE (GET LBA STATUS allocation maps), and no maintained npm package
 * offers them. This addon is deliberately small: plain N-API (ABI-stable), no C++.
 *
 *   fallocate(fd, mode, offset, length) -> Promise<void>        (async work: runs on the libuv pool)
 *   allocationMap(fd, offset, length)   -> Promise<number[]>    (async; flat [offset, length, mapped(0/1), ...])
 *   duplicateFd(fd)                     -> number               (fcntl F_DUPFD_CLOEXEC, synchronous)
 *   sendNoWait(fd, buffers)             -> bytes | -errno       (one sendmsg MSG_DONTWAIT|MSG_NOSIGNAL, synchronous)
 *   preadNoWait / pwriteNoWait(fd, buf, offset, length, position) -> bytes | -errno  (RWF_NOWAIT, synchronous)
 *   pwriteInline(fd, buf, offset, length, position) -> bytes | -errno  (plain pwritev2, synchronous)
 *   mmapThreshold()                     -> number               (bytes glibc's mmap threshold was fixed at by this addon, or 0)
 *   constants: FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
 *
 * Errors reject with an Error carrying .code (e.g. "EOPNOTSUPP") and .errno like Node's fs errors.
 *
 * And file reads/writes through io_uring, so that the data path needs no thread-pool round trip:
 *
 *   uringOpen(entries, results: Int32Array, onComplete: (n) => void) -> ring | null
 *   uringReadv(ring, slot, fd, buf, offset, length, position) -> 0 | -errno   (queued, not yet submitted)
 *   uringWritev(ring, slot, fd, buf, offset, length, position) -> 0 | -errno
 *   uringClose(ring)
 *
 * Why: libuv runs file I/O on its thread pool; every 4 KiB read then costs a hand-off to a pool thread
 * and a wake-up back (two context switches, measured ~2.4 per command at QD32 on 2 vCPUs) on top of
 * the pread itself. With io_uring the main thread queues SQEs while it handles a loop turn's socket
 * data; a uv_prepare hook submits them all with one io_uring_enter before libuv blocks in epoll (many
 * submissions per syscall). Buffered reads that hit the page cache complete inside that call; the rest
 * run on the kernel's io-wq. Completions signal an eventfd that a uv_poll watches in the same loop; its
 * callback copies every ready CQE (slot, result) into `results` and calls onComplete once per batch.
 *
 * Fallback: uringOpen returns null when io_uring cannot be set up (kernel < 5.6 without the needed
 * opcodes, io_uring disabled by sysctl kernel.io_uring_disabled, or forbidden by a container's seccomp
 * profile, which is Docker's default); the caller then keeps using the libuv pool. Built without
 * liburing's headers (LUNAR_HAVE_URING undefined), uringOpen always returns null.
 * One ring per JavaScript environment (main thread or worker): a ring is never shared between threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <uv.h>
#ifdef __GLIBC__
#include <malloc.h>
#include <pthread.h>
#endif
#ifdef LUNAR_HAVE_URING
#include <liburing.h>
#include <sys/eventfd.h>
#endif

#define NAPI_CALL(env, call)                                                  \
  do {                                                                        \
    if ((call) != napi_ok) {                                                  \
      napi_throw_error((env), NULL, "lunar_native: N-API call failed: " #call); \
      return NULL;                                                            \
    }                                                                         \
  } while (0)

static const char *errno_code(int e) {
  switch (e) {
    case EBADF: return "EBADF";
    case EFBIG: return "EFBIG";
    case EINTR: return "EINTR";
    case EINVAL: return "EINVAL";
    case EIO: return "EIO";
    case ENODEV: return "ENODEV";
    case ENOSPC: return "ENOSPC";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EPERM: return "EPERM";
    case ESPIPE: return "ESPIPE";
    case ENXIO: return "ENXIO";
    case ETXTBSY: return "ETXTBSY";
    default: return "EUNKNOWN";
  }
}

static napi_value make_errno_error(napi_env env, const char *syscall, int e) {
  napi_value msg, code, err, errno_v;
  char text[160];
  snprintf(text, sizeof text, "%s: %s (%s)", syscall, strerror(e), errno_code(e));
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
  napi_create_string_utf8(env, errno_code(e), NAPI_AUTO_LENGTH, &code);
  napi_create_error(env, code, msg, &err);
  napi_create_int32(env, -e, &errno_v);
  napi_set_named_property(env, err, "errno", errno_v);
  napi_value sc;
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &sc);
  napi_set_named_property(env, err, "syscall", sc);
  return err;
}

static int get_i64(napi_env env, napi_value v, int64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return -1;
  if (!(d >= 0) || d > 9007199254740991.0) return -1;
  *out = (int64_t)d;
  return 0;
}

/* Queues `execute` on the libuv pool for the request `req` (its async work and deferred stored in
 * *work and *deferred) and returns the promise `complete` settles. */
static napi_value queue_async(napi_env env, const char *resource, napi_async_execute_callback execute,
                              napi_async_complete_callback complete, void *req, napi_async_work *work,
                              napi_deferred *deferred) {
  napi_value promise, name;
  NAPI_CALL(env, napi_create_promise(env, deferred, &promise));
  NAPI_CALL(env, napi_create_string_utf8(env, resource, NAPI_AUTO_LENGTH, &name));
  NAPI_CALL(env, napi_create_async_work(env, NULL, name, execute, complete, req, work));
  NAPI_CALL(env, napi_queue_async_work(env, *work));
  return promise;
}

/* ---- fallocate ---------------------------------------------------------------------------------- */

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int mode;
  int64_t offset;
  int64_t length;
  int err;
} falloc_req;

static void falloc_execute(napi_env env, void *data) {
  (void)env;
  falloc_req *r = data;
  int rc;
  do {
    rc = fallocate(r->fd, r->mode, (off_t)r->offset, (off_t)r->length);
  } while (rc != 0 && errno == EINTR);
  r->err = rc == 0 ? 0 : errno;
}

static void falloc_complete(napi_env env, napi_status status, void *data) {
  falloc_req *r = data;
  if (status != napi_ok) r->err = r->err ? r->err : EINTR;
  if (r->err == 0) {
    napi_value undef;
    napi_get_undefined(env, &undef);
    napi_resolve_deferred(env, r->deferred, undef);
  } else {
    napi_reject_deferred(env, r->deferred, make_errno_error(env, "fallocate", r->err));
  }
  napi_delete_async_work(env, r->work);
  free(r);
}

static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, mode;
  int64_t offset, length;
  if (argc < 4 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int32(env, argv[1], &mode) != napi_ok || get_i64(env, argv[2], &offset) != 0 ||
      get_i64(env, argv[3], &length) != 0) {
    napi_throw_type_error(env, NULL, "fallocate(fd, mode, offset, length): integers >= 0 expected");
    return NULL;
  }
  falloc_req *r = calloc(1, sizeof *r);
  if (!r) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  r->fd = fd;
  r->mode = mode;
  r->offset = offset;
  r->length = length;
  return queue_async(env, "lunar_fallocate", falloc_execute, falloc_complete, r, &r->work, &r->deferred);
}

/* ---- allocation map (SEEK_DATA / SEEK_HOLE) ------------------------------------------------------ */

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int64_t offset;
  int64_t length;
  int err;
  size_t count; /* extents */
  size_t cap;
  int64_t *ext; /* triples: offset, length, mapped */
} map_req;

static int map_push(map_req *r, int64_t off, int64_t len, int mapped) {
  if (len <= 0) return 0;
  /* merge with the previous extent of the same kind */
  if (r->count > 0 && r->ext[(r->count - 1) * 3 + 2] == mapped) {
    r->ext[(r->count - 1) * 3 + 1] += len;
    return 0;
  }
  if (r->count == r->cap) {
    size_t ncap = r->cap ? r->cap * 2 : 16;
    int64_t *n = realloc(r->ext, ncap * 3 * sizeof(int64_t));
    if (!n) return ENOMEM;
    r->ext = n;
    r->cap = ncap;
  }
  r->ext[r->count * 3] = off;
  r->ext[r->count * 3 + 1] = len;
  r->ext[r->count * 3 + 2] = mapped;
  r->count++;
  return 0;
}

static void map_execute(napi_env env, void *data) {
  (void)env;
  map_req *r = data;
  int64_t pos = r->offset, end = r->offset + r->length;
  while (pos < end) {
    off_t data_at = lseek(r->fd, (off_t)pos, SEEK_DATA);
    if (data_at < 0) {
      if (errno == ENXIO) { /* no data at or after pos: the rest is a hole */
        r->err = map_push(r, pos, end - pos, 0);
        return;
      }
      r->err = errno;
      return;
    }
    if (data_at > pos) {
      int64_t hole_end = data_at < end ? data_at : end;
      if ((r->err = map_push(r, pos, hole_end - pos, 0))) return;
      pos = hole_end;
      if (pos >= end) break;
    }
    off_t hole_at = lseek(r->fd, (off_t)pos, SEEK_HOLE);
    if (hole_at < 0) {
      r->err = errno;
      return;
    }
    int64_t data_end = hole_at < end ? hole_at : end;
    if (data_end <= pos) data_end = end; /* defensive: never loop forever */
    if ((r->err = map_push(r, pos, data_end - pos, 1))) return;
    pos = data_end;
  }
}

static void map_complete(napi_env env, napi_status status, void *data) {
  map_req *r = data;
  if (status != napi_ok && !r->err) r->err = EINTR;
  if (r->err) {
    napi_reject_deferred(env, r->deferred, make_errno_error(env, "lseek", r->err));
  } else {
    napi_value arr;
    napi_create_array_with_length(env, r->count * 3, &arr);
    for (size_t i = 0; i < r->count * 3; i++) {
      napi_value v;
      napi_create_double(env, (double)r->ext[i], &v);
      napi_set_element(env, arr, (uint32_t)i, v);
    }
    napi_resolve_deferred(env, r->deferred, arr);
  }
  napi_delete_async_work(env, r->work);
  free(r->ext);
  free(r);
}

static napi_value js_allocation_map(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  int64_t offset, length;
  if (argc < 3 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || get_i64(env, argv[1], &offset) != 0 ||
      get_i64(env, argv[2], &length) != 0) {
    napi_throw_type_error(env, NULL, "allocationMap(fd, offset, length): integers >= 0 expected");
    return NULL;
  }
  map_req *r = calloc(1, sizeof *r);
  if (!r) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  r->fd = fd;
  r->offset = offset;
  r->length = length;
  return queue_async(env, "lunar_allocation_map", map_execute, map_complete, r, &r->work, &r->deferred);
}

/* ---- duplicateFd --------------------------------------------------------------------------------- */

/* duplicateFd(fd) -> new fd (close-on-exec). Node has no dup(2): an accepted socket's descriptor is
 * duplicated so that a net.Socket of the transport's own making (net.Socket({ fd, onread })) can own
 * the connection while the server's socket object closes its copy. */
static napi_value js_duplicate_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "duplicateFd(fd): integer >= 0 expected");
    return NULL;
  }
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (nfd < 0) {
    napi_throw(env, make_errno_error(env, "fcntl(F_DUPFD_CLOEXEC)", errno));
    return NULL;
  }
  NAPI_CALL(env, napi_create_int32(env, nfd, &result));
  return result;
}

/* ---- sendNoWait ------------------------------------------------------------------------------------ */

/* sendNoWait(fd, buffers) -> bytes | -errno, synchronous: one sendmsg(MSG_DONTWAIT | MSG_NOSIGNAL) of the
 * buffers in order (at most IOV_MAX of them). Why: net.Socket's write path (Writable.write,
 * writeOrBuffer, a WriteWrap, LibuvStreamWrap's try-write, then a process.nextTick for the callback) is
 * a fixed cost per loop turn that a connection answering one command per turn (QD1) pays in full; the
 * caller writes here only when the stream holds nothing, and queues what the kernel did not take on
 * the stream as before (docs/benchmarks.md). sendmsg, not writev: on a descriptor that is not a socket
 * it fails with ENOTSOCK instead of writing. */
static napi_value js_send_nowait(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  uint32_t count;
  bool is_array = false;
  if (argc < 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[1], &count) != napi_ok) {
    napi_throw_type_error(env, NULL, "sendNoWait(fd, buffers): integer >= 0 and an array of Buffers expected");
    return NULL;
  }
  if (count > IOV_MAX) count = IOV_MAX;
  struct iovec iov_small[16];
  struct iovec *iov = count <= 16 ? iov_small : malloc(sizeof(struct iovec) * count);
  if (iov == NULL) {
    NAPI_CALL(env, napi_create_double(env, -(double)ENOMEM, &result));
    return result;
  }
  for (uint32_t i = 0; i < count; i++) {
    napi_value el;
    void *data;
    size_t len;
    if (napi_get_element(env, argv[1], i, &el) != napi_ok || napi_get_buffer_info(env, el, &data, &len) != napi_ok) {
      if (iov != iov_small) free(iov);
      napi_throw_type_error(env, NULL, "sendNoWait(fd, buffers): every element must be a Buffer");
      return NULL;
    }
    iov[i].iov_base = data;
    iov[i].iov_len = len;
  }
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = count;
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  int e = errno;
  if (iov != iov_small) free(iov);
  NAPI_CALL(env, napi_create_double(env, n < 0 ? -(double)e : (double)n, &result));
  return result;
}

/* ---- preadNoWait / pwriteNoWait ----------------------------------------------------------------------- */

/* preadNoWait/pwriteNoWait(fd, buf, offset, length, position) -> bytes | -errno, synchronous.
 * preadv2/pwritev2 with RWF_NOWAIT: done in the call when the page cache has the data (or takes the write)
 * without waiting for the device, else -EAGAIN at once (or a short count: what was cached). Why: a page
 * cache hit then costs one syscall in the calling thread and no completion to wait for, where io_uring
 * needs an io_uring_enter, an eventfd wake-up and a second event-loop callback, and the thread pool two
 * context switches (measured per 4 KiB READ at QD1, docs/benchmarks.md). The caller queues the rest
 * on io_uring or the pool. */
static napi_value rw_inline(napi_env env, napi_callback_info info, int write, int flags) {
  size_t argc = 5;
  napi_value argv[5], result;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  uint32_t offset, length;
  int64_t position;
  void *data;
  size_t buf_len;
  if (argc < 5 || napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], &data, &buf_len) != napi_ok ||
      napi_get_value_uint32(env, argv[2], &offset) != napi_ok || napi_get_value_uint32(env, argv[3], &length) != napi_ok ||
      get_i64(env, argv[4], &position) != 0 || (size_t)offset + length > buf_len) {
    napi_throw_type_error(env, NULL, "preadNoWait/pwriteNoWait(fd, buffer, offset, length, position): bad arguments");
    return NULL;
  }
  struct iovec iov = {(char *)data + offset, length};
  ssize_t n;
  do {
    n = write ? pwritev2(fd, &iov, 1, (off_t)position, flags) : preadv2(fd, &iov, 1, (off_t)position, flags);
  } while (n < 0 && errno == EINTR);
  NAPI_CALL(env, napi_create_double(env, n < 0 ? -(double)errno : (double)n, &result));
  return result;
}

static napi_value js_pread_nowait(napi_env env, napi_callback_info info) {
  return rw_inline(env, info, 0, RWF_NOWAIT);
}

static napi_value js_pwrite_nowait(napi_env env, napi_callback_info info) {
  return rw_inline(env, info, 1, RWF_NOWAIT);
}

/* pwriteInline(fd, buf, offset, length, position) -> bytes | -errno: a plain pwritev2 (may wait) in the
 * calling thread. Why: ext4 refuses RWF_NOWAIT for buffered writes, so io_uring punts every write to
 * an io-wq worker (a thread wake-up, the copy there, an eventfd wake-up of the loop back); a small
 * buffered write is a copy into the page cache that costs less than those hand-offs (measured per
 * 4 KiB WRITE at QD1, docs/benchmarks.md). The caller keeps large writes, and every write while the
 * page cache throttles it, on the ring (src/storage/file-io.ts): when the thread slept during the
 * write (getrusage RUSAGE_THREAD: a voluntary context switch) the count is returned plus
 * INLINE_WRITE_WAITED. Being preempted (the machine busy) is not sleeping and is not reported. */
#define INLINE_WRITE_WAITED 4294967296.0 /* 2^32: larger than any count of one write (lengths are uint32) */
static napi_value js_pwrite_inline(napi_env env, napi_callback_info info) {
  struct rusage before, after;
  int have = getrusage(RUSAGE_THREAD, &before) == 0;
  napi_value r = rw_inline(env, info, 1, 0);
  double n;
  if (r == NULL || !have || getrusage(RUSAGE_THREAD, &after) != 0 || after.ru_nvcsw == before.ru_nvcsw ||
      napi_get_value_double(env, r, &n) != napi_ok || n < 0)
    return r;
  /* The thread slept in the write (a voluntary context switch: dirty-page throttling, a page lock,
   * memory reclaim): tell the caller, which then queues writes on the ring for a while. */
  napi_value waited;
  NAPI_CALL(env, napi_create_double(env, n + INLINE_WRITE_WAITED, &waited));
  return waited;
}

/* ---- io_uring reads and writes -------------------------------------------------------------------- */

#ifdef LUNAR_HAVE_URING
typedef struct {
  struct io_uring ring;
  napi_env env;
  int efd;
  uv_poll_t poll;     /* eventfd readable: completions are ready */
  uv_prepare_t prep;  /* before the loop blocks: submit what was queued */
  unsigned queued;    /* SQEs prepared, not yet submitted */
  unsigned inflight;  /* submitted or queued, not yet completed */
  unsigned slots;     /* valid slot numbers: 0 .. slots-1 */
  struct iovec *iov;  /* one per slot: the kernel reads it at submission (readv/writev) */
  int32_t *results;   /* pairs (slot, res) in the JS Int32Array */
  size_t result_pairs;
  napi_ref results_ref;
  napi_ref callback_ref;
  int closed;
  int handles_open;   /* uv handles not yet closed */
} uring_t;

static void uring_submit(uring_t *u) {
  if (u->queued == 0 || u->closed) return;
  int rc;
  do {
    rc = io_uring_submit(&u->ring);
  } while (rc == -EINTR);
  if (rc >= 0) u->queued -= (unsigned)rc > u->queued ? u->queued : (unsigned)rc;
  /* rc < 0 (EAGAIN/EBUSY: too many completions pending): the SQEs stay queued and go out on the next
   * loop turn, after the completion callback has drained the CQ. */
}

static void uring_on_prepare(uv_prepare_t *h) {
  uring_submit((uring_t *)h->data);
}

static void uring_update_ref(uring_t *u) {
  /* Keep the loop alive only while I/O is in flight. */
  if (u->inflight > 0) uv_ref((uv_handle_t *)&u->poll);
  else uv_unref((uv_handle_t *)&u->poll);
}

static void uring_on_poll(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  uring_t *u = h->data;
  uint64_t v;
  while (read(u->efd, &v, sizeof v) < 0 && errno == EINTR) {
  }
  if (u->closed) return;
  napi_handle_scope scope;
  napi_open_handle_scope(u->env, &scope);
  napi_value cb, recv;
  napi_get_reference_value(u->env, u->callback_ref, &cb);
  napi_get_global(u->env, &recv); /* make_callback wants an object as receiver */
  for (;;) {
    struct io_uring_cqe *cqe;
    size_t n = 0;
    while (n < u->result_pairs && io_uring_peek_cqe(&u->ring, &cqe) == 0) {
      u->results[n * 2] = (int32_t)cqe->user_data;
      u->results[n * 2 + 1] = cqe->res;
      io_uring_cqe_seen(&u->ring, cqe);
      n++;
    }
    if (n == 0) break;
    u->inflight -= n > u->inflight ? u->inflight : (unsigned)n;
    napi_value argv[1];
    napi_create_uint32(u->env, (uint32_t)n, &argv[0]);
    /* make_callback: runs the microtasks (promise reactions) the completions queue, like any libuv callback. */
    napi_value ignored;
    napi_status st = napi_make_callback(u->env, NULL, recv, cb, 1, argv, &ignored);
    if (st == napi_pending_exception) {
      napi_value exc;
      napi_get_and_clear_last_exception(u->env, &exc);
      napi_fatal_exception(u->env, exc);
      break;
    }
    if (u->closed || n < u->result_pairs) break;
  }
  if (!u->closed) {
    uring_submit(u); /* reads queued by the callbacks need not wait for the next loop turn */
    uring_update_ref(u);
  }
  napi_close_handle_scope(u->env, scope);
}

static void uring_free(uring_t *u) {
  free(u->iov);
  free(u);
}

static void uring_on_handle_closed(uv_handle_t *h) {
  uring_t *u = h->data;
  if (--u->handles_open == 0) uring_free(u);
}

static void uring_close(uring_t *u) {
  if (u->closed) return;
  u->closed = 1;
  /* The kernel cancels or finishes what is still in flight when the ring is torn down; callers close
   * their stores (waiting for their I/O) before they close the ring. */
  io_uring_unregister_eventfd(&u->ring);
  io_uring_queue_exit(&u->ring);
  close(u->efd);
  if (u->results_ref) napi_delete_reference(u->env, u->results_ref);
  if (u->callback_ref) napi_delete_reference(u->env, u->callback_ref);
  u->results_ref = NULL;
  u->callback_ref = NULL;
  u->handles_open = 2;
  uv_close((uv_handle_t *)&u->poll, uring_on_handle_closed);
  uv_close((uv_handle_t *)&u->prep, uring_on_handle_closed);
}

static void uring_env_cleanup(void *arg) {
  uring_close(arg);
}

static void uring_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)data;
  (void)hint;
  /* Freed through uringClose or the env cleanup hook, never by GC: the loop still holds its handles. */
}
#endif

/* uringOpen(entries, results, onComplete) */
static napi_value js_uring_open(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  NAPI_CALL(env, napi_get_null(env, &result));
#ifndef LUNAR_HAVE_URING
  (void)argc;
  return result;
#else
  uint32_t entries;
  napi_typedarray_type ta_type;
  size_t ta_len;
  void *ta_data;
  napi_valuetype cb_type;
  if (argc < 3 || napi_get_value_uint32(env, argv[0], &entries) != napi_ok || entries < 1 || entries > 4096 ||
      napi_get_typedarray_info(env, argv[1], &ta_type, &ta_len, &ta_data, NULL, NULL) != napi_ok ||
      ta_type != napi_int32_array || ta_len < 2 || napi_typeof(env, argv[2], &cb_type) != napi_ok ||
      cb_type != napi_function) {
    napi_throw_type_error(env, NULL, "uringOpen(entries 1..4096, results: Int32Array, onComplete: function)");
    return NULL;
  }
  if (getenv("LUNAR_NO_IO_URING") != NULL && getenv("LUNAR_NO_IO_URING")[0] == '1') return result;
  uring_t *u = calloc(1, sizeof *u);
  if (!u) return result;
  u->env = env;
  u->slots = entries;
  u->iov = calloc(entries, sizeof *u->iov);
  struct io_uring_params p;
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_CQSIZE;
  p.cq_entries = entries * 2;
  if (!u->iov || io_uring_queue_init_params(entries, &u->ring, &p) != 0) {
    /* ENOSYS / EPERM (seccomp, io_uring_disabled) / ENOMEM (memlock): the caller uses the pool. */
    uring_free(u);
    return result;
  }
  u->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (u->efd < 0 || io_uring_register_eventfd(&u->ring, u->efd) != 0) {
    if (u->efd >= 0) close(u->efd);
    io_uring_queue_exit(&u->ring);
    uring_free(u);
    return result;
  }
  uv_loop_t *loop;
  NAPI_CALL(env, napi_get_uv_event_loop(env, &loop));
  uv_poll_init(loop, &u->poll, u->efd);
  uv_prepare_init(loop, &u->prep);
  u->poll.data = u;
  u->prep.data = u;
  uv_poll_start(&u->poll, UV_READABLE, uring_on_poll);
  uv_prepare_start(&u->prep, uring_on_prepare);
  uv_unref((uv_handle_t *)&u->prep);
  uv_unref((uv_handle_t *)&u->poll);
  u->results = ta_data;
  u->result_pairs = ta_len / 2;
  NAPI_CALL(env, napi_create_reference(env, argv[1], 1, &u->results_ref));
  NAPI_CALL(env, napi_create_reference(env, argv[2], 1, &u->callback_ref));
  NAPI_CALL(env, napi_add_env_cleanup_hook(env, uring_env_cleanup, u));
  NAPI_CALL(env, napi_create_external(env, u, uring_finalize, NULL, &result));
  return result;
#endif
}

#ifdef LUNAR_HAVE_URING
static uring_t *get_ring(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) return NULL;
  uring_t *u = p;
  return u->closed ? NULL : u;
}

/* uringReadv/uringWritev(ring, slot, fd, buf, offset, length, position) -> 0 | -errno */
static napi_value uring_rw(napi_env env, napi_callback_info info, int write) {
  size_t argc = 7;
  napi_value argv[7], result;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uring_t *u = argc == 7 ? get_ring(env, argv[0]) : NULL;
  uint32_t slot, offset, length;
  int32_t fd;
  int64_t position;
  void *data;
  size_t buf_len;
  if (!u || napi_get_value_uint32(env, argv[1], &slot) != napi_ok || slot >= u->slots ||
      napi_get_value_int32(env, argv[2], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[3], &data, &buf_len) != napi_ok ||
      napi_get_value_uint32(env, argv[4], &offset) != napi_ok || napi_get_value_uint32(env, argv[5], &length) != napi_ok ||
      get_i64(env, argv[6], &position) != 0 || (size_t)offset + length > buf_len) {
    napi_throw_type_error(env, NULL, "uringReadv/uringWritev(ring, slot, fd, buffer, offset, length, position): bad arguments");
    return NULL;
  }
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  if (!sqe) {
    uring_submit(u); /* SQ full: make room */
    sqe = io_uring_get_sqe(&u->ring);
  }
  if (!sqe) {
    NAPI_CALL(env, napi_create_int32(env, -EBUSY, &result));
    return result;
  }
  u->iov[slot].iov_base = (char *)data + offset;
  u->iov[slot].iov_len = length;
  if (write) io_uring_prep_writev(sqe, fd, &u->iov[slot], 1, (uint64_t)position);
  else io_uring_prep_readv(sqe, fd, &u->iov[slot], 1, (uint64_t)position);
  io_uring_sqe_set_data64(sqe, slot);
  u->queued++;
  u->inflight++;
  uring_update_ref(u);
  NAPI_CALL(env, napi_create_int32(env, 0, &result));
  return result;
}
#else
static napi_value uring_rw(napi_env env, napi_callback_info info, int write) {
  (void)info;
  (void)write;
  napi_throw_error(env, NULL, "io_uring support not built");
  return NULL;
}
#endif

static napi_value js_uring_readv(napi_env env, napi_callback_info info) {
  return uring_rw(env, info, 0);
}

static napi_value js_uring_writev(napi_env env, napi_callback_info info) {
  return uring_rw(env, info, 1);
}

static napi_value js_uring_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], undef;
  NAPI_CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  NAPI_CALL(env, napi_get_undefined(env, &undef));
#ifdef LUNAR_HAVE_URING
  void *p = NULL;
  if (argc == 1 && napi_get_value_external(env, argv[0], &p) == napi_ok && p) {
    uring_t *u = p;
    if (!u->closed) {
      napi_remove_env_cleanup_hook(env, uring_env_cleanup, u);
      uring_close(u);
    }
  }
#endif
  return undef;
}

/*
 * glibc's mmap threshold, fixed at its initial 128 KiB when the addon is first loaded.
 *
 * Why: by default glibc raises the threshold to the size of any freed block larger than it (up to 32 MiB
 * on 64-bit), and with it the trim threshold to twice that (man mallopt, M_MMAP_THRESHOLD note). After the
 * first 1 MiB Data-Out buffer is freed, every later 1 MiB buffer comes from the brk heap, which can only be
 * trimmed at its top: the scale run's LU fill (64 x 1 MiB writes in flight) left 78-95 MiB of freed heap
 * resident for the rest of the run. Setting M_MMAP_THRESHOLD also disables that dynamic adjustment
 * (man mallopt: "Dynamic adjustment of the mmap threshold is disabled if any of the M_TRIM_THRESHOLD,
 * M_TOP_PAD, M_MMAP_THRESHOLD, or M_MMAP_MAX parameters is set"), so large buffers stay mmap(2)ed and
 * go back to the kernel when freed. Measured with `npm run bench -- --targets lunar --only randread-4k-qd32
 * --scale 64x4 --runs 1`, 19 runs of this against as many of the tree without it, alternating: scale max
 * RSS median 255.2 -> 196.3 MiB (220-264 -> 176-215), brk heap at the peak 78-95 -> 9-10 MiB; CPU per
 * command within the (wide) spread, and no allocator or page-fault cost in the scale run's profile.
 *
 * The operator's choice wins: with MALLOC_MMAP_THRESHOLD_ or a glibc.malloc.mmap_threshold tunable in
 * the environment, glibc has already applied it and the addon leaves it. The setting is process-wide
 * and the addon is loaded once per JavaScript environment (main thread and each worker), hence
 * pthread_once. Other C libraries have no M_MMAP_THRESHOLD to set (musl's mallopt does nothing): nothing is
 * done there.
 */
#define LUNAR_MMAP_THRESHOLD (128 * 1024)
static int mmap_threshold_fixed; /* LUNAR_MMAP_THRESHOLD once mallopt accepted it, else 0 */
#ifdef __GLIBC__
static pthread_once_t mmap_threshold_once = PTHREAD_ONCE_INIT;

static void fix_mmap_threshold(void) {
  if (getenv("MALLOC_MMAP_THRESHOLD_") != NULL) return;
  const char *tunables = getenv("GLIBC_TUNABLES");
  if (tunables != NULL && strstr(tunables, "glibc.malloc.mmap_threshold") != NULL) return;
  if (mallopt(M_MMAP_THRESHOLD, LUNAR_MMAP_THRESHOLD) == 1) mmap_threshold_fixed = LUNAR_MMAP_THRESHOLD;
}
#endif

static napi_value js_mmap_threshold(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  NAPI_CALL(env, napi_create_int32(env, mmap_threshold_fixed, &v));
  return v;
}

static napi_value init(napi_env env, napi_value exports) {
#ifdef __GLIBC__
  pthread_once(&mmap_threshold_once, fix_mmap_threshold);
#endif
  napi_value fn, v;
  NAPI_CALL(env, napi_create_function(env, "fallocate", NAPI_AUTO_LENGTH, js_fallocate, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "fallocate", fn));
  NAPI_CALL(env, napi_create_function(env, "allocationMap", NAPI_AUTO_LENGTH, js_allocation_map, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "allocationMap", fn));
  NAPI_CALL(env, napi_create_function(env, "duplicateFd", NAPI_AUTO_LENGTH, js_duplicate_fd, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "duplicateFd", fn));
  NAPI_CALL(env, napi_create_function(env, "sendNoWait", NAPI_AUTO_LENGTH, js_send_nowait, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "sendNoWait", fn));
  NAPI_CALL(env, napi_create_function(env, "preadNoWait", NAPI_AUTO_LENGTH, js_pread_nowait, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "preadNoWait", fn));
  NAPI_CALL(env, napi_create_function(env, "pwriteNoWait", NAPI_AUTO_LENGTH, js_pwrite_nowait, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "pwriteNoWait", fn));
  NAPI_CALL(env, napi_create_function(env, "pwriteInline", NAPI_AUTO_LENGTH, js_pwrite_inline, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "pwriteInline", fn));
  NAPI_CALL(env, napi_create_function(env, "uringOpen", NAPI_AUTO_LENGTH, js_uring_open, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "uringOpen", fn));
  NAPI_CALL(env, napi_create_function(env, "uringReadv", NAPI_AUTO_LENGTH, js_uring_readv, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "uringReadv", fn));
  NAPI_CALL(env, napi_create_function(env, "uringWritev", NAPI_AUTO_LENGTH, js_uring_writev, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "uringWritev", fn));
  NAPI_CALL(env, napi_create_function(env, "uringClose", NAPI_AUTO_LENGTH, js_uring_close, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "uringClose", fn));
  NAPI_CALL(env, napi_create_function(env, "mmapThreshold", NAPI_AUTO_LENGTH, js_mmap_threshold, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "mmapThreshold", fn));
  NAPI_CALL(env, napi_create_int32(env, FALLOC_FL_KEEP_SIZE, &v));
  NAPI_CALL(env, napi_set_named_property(env, exports, "FALLOC_FL_KEEP_SIZE", v));
  NAPI_CALL(env, napi_create_int32(env, FALLOC_FL_PUNCH_HOLE, &v));
  NAPI_CALL(env, napi_set_named_property(env, exports, "FALLOC_FL_PUNCH_HOLE", v));
  NAPI_CALL(env, napi_create_int32(env, FALLOC_FL_ZERO_RANGE, &v));
  NAPI_CALL(env, napi_set_named_property(env, exports, "FALLOC_FL_ZERO_RANGE", v));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
