/*
 * lunar_native: the few Linux file primitives a sparse-file backing store needs and Node.js lacks.
 *
 * Why hand-written: Node's fs has no fallocate(2) (PUNCH_HOLE for UNMAP / WRITE SAME UNMAP, preallocation)
 * and no lseek(2) SEEK_DATA / SEEK_HOLE (GET LBA STATUS allocation maps), and no maintained npm package
 * offers them. This addon is deliberately tiny: three functions, plain N-API (ABI-stable), no C++.
 *
 *   fallocate(fd, mode, offset, length) -> Promise<void>        (async work: runs on the libuv pool)
 *   allocationMap(fd, offset, length)   -> Promise<number[]>    (async; flat [offset, length, mapped(0/1), ...])
 *   constants: FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE
 *
 * Errors reject with an Error carrying .code (e.g. "EOPNOTSUPP") and .errno like Node's fs errors.
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
  napi_value promise, name;
  NAPI_CALL(env, napi_create_promise(env, &r->deferred, &promise));
  NAPI_CALL(env, napi_create_string_utf8(env, "lunar_fallocate", NAPI_AUTO_LENGTH, &name));
  NAPI_CALL(env, napi_create_async_work(env, NULL, name, falloc_execute, falloc_complete, r, &r->work));
  NAPI_CALL(env, napi_queue_async_work(env, r->work));
  return promise;
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
  napi_value promise, name;
  NAPI_CALL(env, napi_create_promise(env, &r->deferred, &promise));
  NAPI_CALL(env, napi_create_string_utf8(env, "lunar_allocation_map", NAPI_AUTO_LENGTH, &name));
  NAPI_CALL(env, napi_create_async_work(env, NULL, name, map_execute, map_complete, r, &r->work));
  NAPI_CALL(env, napi_queue_async_work(env, r->work));
  return promise;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn, v;
  NAPI_CALL(env, napi_create_function(env, "fallocate", NAPI_AUTO_LENGTH, js_fallocate, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "fallocate", fn));
  NAPI_CALL(env, napi_create_function(env, "allocationMap", NAPI_AUTO_LENGTH, js_allocation_map, NULL, &fn));
  NAPI_CALL(env, napi_set_named_property(env, exports, "allocationMap", fn));
  NAPI_CALL(env, napi_create_int32(env, FALLOC_FL_KEEP_SIZE, &v));
  NAPI_CALL(env, napi_set_named_property(env, exports, "FALLOC_FL_KEEP_SIZE", v));
  NAPI_CALL(env, napi_create_int32(env, FALLOC_FL_PUNCH_HOLE, &v));
  NAPI_CALL(env, napi_set_named_property(env, exports, "FALLOC_FL_PUNCH_HOLE", v));
  NAPI_CALL(env, napi_create_int32(env, FALLOC_FL_ZERO_RANGE, &v));
  NAPI_CALL(env, napi_set_named_property(env, exports, "FALLOC_FL_ZERO_RANGE", v));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
