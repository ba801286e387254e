// Backpressure: waiting, briefly and boundedly, for a socket or TUN fd to take more.
#include "meshd.h"

#include <errno.h>
#include <poll.h>
#include <time.h>

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

bool bp_wait(int fd, int err, int64_t *used_ns) {
  if (*used_ns >= (int64_t)BP_BUDGET_MS * 1000000) return false;
  int64_t t0 = now_ns();
  if (err == ENOBUFS || err == ENOMEM) {
    // A full device or qdisc queue: POLLOUT does not track it, so sleep a little instead.
    struct timespec d = {0, BP_NOBUFS_SLEEP_US * 1000};
    nanosleep(&d, NULL);
  } else {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r;
    do r = poll(&p, 1, BP_WAIT_MS);
    while (r < 0 && errno == EINTR);
  }
  *used_ns += now_ns() - t0;
  return true;
}
