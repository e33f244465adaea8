{
  "variables": {
    "lunar_have_uring": "<!(test -f /usr/include/liburing.h && test -f /usr/lib/x86_64-linux-gnu/liburing.a -o -f /usr/lib/liburing.a && echo 1 || echo 0)"
  },
  "targets": [
    {
      "target_name": "lunar_native",
      "sources": ["native/lunar_native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE", "_FILE_OFFSET_BITS=64"],
      "conditions": [
        [
          "lunar_have_uring==1",
          {
            "defines": ["LUNAR_HAVE_URING"],
            "libraries": ["-Wl,-Bstatic", "-luring", "-Wl,-Bdynamic"]
          }
        ]
      ]
    }
  ]
}
