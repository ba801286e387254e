// TCP sockets for meshd's own connections (control over TS2021, DERP) with SO_MARK set, so an exit
// node's policy routing never captures them whatever their address (src/router/linux.ts: rules
// 5210-5250 send marked packets to the main table). Node cannot set SO_MARK on its sockets, so
// this makes the unconnected fd and Node connects it: new net.Socket({ fd }).connect(...) keeps
// the fd (libuv's uv_tcp_connect uses a handle's existing socket), with TLS on top as usual.
#include "meshd.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

// tcpSocket(mark): { fd, family } -- an AF_INET6 dual-stack stream socket (IPv4 peers reached as
// ::ffff:a.b.c.d), or AF_INET where the host has no IPv6; non-blocking, close-on-exec, unconnected.
static napi_value js_tcp_socket(napi_env env, napi_callback_info info) {
  ARGS(1);
  uint32_t mark;
  if (!arg_uint32(env, argv[0], "mark", &mark)) return NULL;
  int family = 6;
  int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    int off = 0;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) < 0) {
      int e = errno;
      close(fd);
      return throw_errno(env, e, "setsockopt IPV6_V6ONLY", "tcpSocket", NULL);
    }
  } else if (errno == EAFNOSUPPORT) {
    family = 4;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  }
  if (fd < 0) {
    int e = errno;
    return throw_errno(env, e, "socket", "tcpSocket",
                       e == EMFILE || e == ENFILE ? "too many open files: raise the fd limit (ulimit -n)" : NULL);
  }
  if (mark != 0 && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "setsockopt SO_MARK", "tcpSocket",
                       e == EPERM ? "setting SO_MARK needs root or CAP_NET_ADMIN" : NULL);
  }
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_int32(env, fd, &v);
  napi_set_named_property(env, out, "fd", v);
  napi_create_int32(env, family, &v);
  napi_set_named_property(env, out, "family", v);
  return out;
}

bool init_sock(napi_env env, napi_value exports) {
  return export_fn(env, exports, "tcpSocket", js_tcp_socket);
}
