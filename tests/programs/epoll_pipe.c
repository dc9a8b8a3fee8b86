/* epoll_pipe.c: the main thread loops on epoll_wait and select with
 * timeouts and treats EINTR (or an early return) as fatal; a second thread
 * is blocked in read() on a pipe that is only written after the last
 * restart and must get exactly those bytes. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <unistd.h>
#include "zdtm.h"

static int feed[2];
static char got[64];
static ssize_t got_n = -1;

static void *reader(void *arg) {
    (void)arg;
    got_n = read(feed[0], got, sizeof got);
    return NULL;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    int idle[2];
    if (pipe(idle) || pipe(feed))
        zdtm_fail("pipe");
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = idle[0]};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, idle[0], &ev))
        zdtm_fail("epoll setup");
    pthread_t t;
    pthread_create(&t, NULL, reader, NULL);
    zdtm_ready();
    while (!zdtm_stop_requested()) {
        struct epoll_event out;
        uint64_t t0 = zdtm_now_ns();
        int n = epoll_wait(ep, &out, 1, 200);
        if (n < 0)
            zdtm_fail("epoll_wait: %s", strerror(errno));
        if (n != 0)
            zdtm_fail("epoll_wait returned %d", n);
        if (zdtm_now_ns() - t0 < 190 * 1000 * 1000ULL)
            zdtm_fail("epoll_wait returned early");
        fd_set rs;
        FD_ZERO(&rs);
        FD_SET(idle[0], &rs);
        struct timeval tv = {0, 100 * 1000};
        if (select(idle[0] + 1, &rs, NULL, NULL, &tv) < 0)
            zdtm_fail("select: %s", strerror(errno));
    }
    const char msg[] = "fed after restart";
    if (write(feed[1], msg, sizeof msg) != sizeof msg)
        zdtm_fail("write");
    pthread_join(t, NULL);
    if (got_n != sizeof msg || memcmp(got, msg, sizeof msg))
        zdtm_fail("reader got %zd bytes", got_n);
    zdtm_pass();
}
