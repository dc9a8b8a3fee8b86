/* peer_server.c: an epoll server whose clients are outside the computation.
 * It listens on 127.0.0.1 (port picked at start, printed as "PORT n"), and
 * answers every line "ping" with "pong". Clients connected at checkpoint
 * time cannot be restored: after a restart each must look like a dropped
 * connection in the same epoll set with the same data: the event reports
 * EPOLLHUP or EPOLLERR, a write fails with ECONNRESET or EPIPE (SIGPIPE is
 * ignored), a read gives ECONNRESET or end of file. The server prints
 * "GONE fd N ..." for each, closes it and serves new clients. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include "zdtm.h"

#define MAXFD 1024
static int is_client[MAXFD];

static void gone(int ep, int fd, uint32_t ev, const char *why) {
    char c = 'x';
    ssize_t w = write(fd, &c, 1);
    int werr = errno;
    char buf[64];
    ssize_t r = read(fd, buf, sizeof buf);
    int rerr = errno;
    /* A reset peer: the first of read/write reports ECONNRESET, later
     * ones EPIPE (write) and end of file (read). An orderly close: read
     * gives 0, write may still succeed once. */
    printf("GONE fd %d events 0x%x (%s) write %zd errno %d read %zd errno %d\n", fd, ev, why, w,
           w < 0 ? werr : 0, r, r < 0 ? rerr : 0);
    fflush(stdout);
    if (r > 0)
        zdtm_fail("fd %d: a dropped client still gives %zd bytes", fd, r);
    if (r < 0 && rerr != ECONNRESET && rerr != EAGAIN)
        zdtm_fail("fd %d: read after drop: %s", fd, strerror(rerr));
    if (w < 0 && werr != ECONNRESET && werr != EPIPE)
        zdtm_fail("fd %d: write after drop: %s", fd, strerror(werr));
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    is_client[fd] = 0;
    close(fd);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 16) ||
        getsockname(l, (struct sockaddr *)&a, &len))
        zdtm_fail("listen: %s", strerror(errno));
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 0xfeedULL << 32 | (unsigned)l};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, l, &e))
        zdtm_fail("epoll: %s", strerror(errno));
    printf("PORT %d\n", ntohs(a.sin_port));
    fflush(stdout);
    zdtm_ready();
    int served = 0;
    while (!zdtm_stop_requested()) {
        struct epoll_event evs[16];
        int n = epoll_wait(ep, evs, 16, 100);
        if (n < 0 && errno != EINTR)
            zdtm_fail("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            uint64_t d = evs[i].data.u64;
            if (d >> 32 != 0xfeed && d >> 32 != 0xc11e)
                zdtm_fail("epoll data 0x%llx is not one the program registered",
                          (unsigned long long)d);
            int fd = (int)(uint32_t)d;
            if (d >> 32 == 0xfeed) {
                int c = accept(l, NULL, NULL);
                if (c < 0 || c >= MAXFD)
                    continue;
                struct epoll_event ce = {.events = EPOLLIN | EPOLLRDHUP,
                                         .data.u64 = 0xc11eULL << 32 | (unsigned)c};
                if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce))
                    zdtm_fail("epoll_ctl add client: %s", strerror(errno));
                is_client[c] = 1;
                continue;
            }
            if (fd < 0 || fd >= MAXFD || !is_client[fd])
                zdtm_fail("event for fd %d, not a client", fd);
            uint32_t ev = evs[i].events;
            if (ev & (EPOLLHUP | EPOLLERR)) {
                gone(ep, fd, ev, "hangup");
                continue;
            }
            char buf[256];
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0) {
                gone(ep, fd, ev, r == 0 ? "eof" : "error");
                continue;
            }
            if (r >= 4 && memcmp(buf, "ping", 4) == 0) {
                if (write(fd, "pong\n", 5) != 5)
                    gone(ep, fd, ev, "write");
                else
                    served++;
            }
        }
    }
    printf("served %d\n", served);
    zdtm_pass();
}
