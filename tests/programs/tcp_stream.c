/* tcp_stream.c: TCP connections inside the computation survive.
 *   tcp_stream (client) --127.0.0.1--> tcp_stream-srv (forked server)
 *                       --[::1]------>  (when IPv6 loopback works)
 *                       --127.0.0.1-->  [::] dual-stack listener (IPv6 too)
 *                       --half------->  (server shut down writing)
 * - on each stream connection the client keeps WINDOW numbers (32 KiB of
 *   payload) in flight to the server, which answers each n with n+1; both
 *   check the sequence, so bytes in flight both ways at checkpoint time
 *   must come back exactly once;
 * - the server's ends are O_NONBLOCK with TCP_NODELAY and SO_KEEPALIVE,
 *   which must stay set;
 * - on the "half" connection the server sent HALF bytes then called
 *   shutdown(SHUT_WR); the client reads them only at the end and must then
 *   see EOF, and the server must still receive the client's last message;
 * - every end's getsockname/getpeername must be unchanged (a change is
 *   printed as "ADDRESSES CHANGED", which the harness accepts only when
 *   the restart warned that the old port was taken). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

#define WINDOW 4096
#define HALF 5000
#define END UINT64_MAX
#define MAXC 3

struct conn {
    int fd;
    const char *name;
    struct sockaddr_storage me, peer;
};

static void wait_for(int fd, short ev) {
    struct pollfd p = {fd, ev, 0};
    while (poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
}

static void read_full(struct conn *c, void *buf, size_t len, const char *who) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(c->fd, (char *)buf + got, len - got);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            wait_for(c->fd, POLLIN);
            continue;
        }
        if (n <= 0)
            zdtm_fail("%s: read %s: %s", who, c->name, n ? strerror(errno) : "EOF");
        got += n;
    }
}

static void write_full(struct conn *c, const void *buf, size_t len, const char *who) {
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(c->fd, (const char *)buf + done, len - done);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            wait_for(c->fd, POLLOUT);
            continue;
        }
        if (n <= 0)
            zdtm_fail("%s: write %s: %s", who, c->name, strerror(errno));
        done += n;
    }
}

static void remember(struct conn *c) {
    socklen_t l = sizeof c->me;
    socklen_t p = sizeof c->peer;
    if (getsockname(c->fd, (struct sockaddr *)&c->me, &l) ||
        getpeername(c->fd, (struct sockaddr *)&c->peer, &p))
        zdtm_fail("%s: getsockname/getpeername: %s", c->name, strerror(errno));
}

static void same_addresses(struct conn *c, const char *who) {
    struct sockaddr_storage me, peer;
    socklen_t l = sizeof me, p = sizeof peer;
    memset(&me, 0, sizeof me);
    memset(&peer, 0, sizeof peer);
    if (getsockname(c->fd, (struct sockaddr *)&me, &l) ||
        getpeername(c->fd, (struct sockaddr *)&peer, &p))
        zdtm_fail("%s: %s: getsockname/getpeername: %s", who, c->name, strerror(errno));
    /* Restart falls back to a fresh port (with a warning) when another
     * program took the old one meanwhile: reported, and the harness
     * accepts it only together with that warning. */
    if (memcmp(&me, &c->me, l) || memcmp(&peer, &c->peer, p)) {
        printf("ADDRESSES CHANGED: %s: %s\n", who, c->name);
        fflush(stdout);
    }
}

static int int_opt(int fd, int level, int opt) {
    int v = 0;
    socklen_t l = sizeof v;
    getsockopt(fd, level, opt, &v, &l);
    return v;
}

static int server(int *ls, int nc, int lh) {
    prctl(PR_SET_NAME, "tcp_stream-srv");
    static const char *names[MAXC] = {"ipv4", "ipv6", "dual-stack"};
    struct conn c[MAXC], half = {.name = "half"};
    uint64_t expect[MAXC] = {0}, got = 0;
    for (int i = 0; i < nc; i++) {
        c[i].name = names[i];
        c[i].fd = accept(ls[i], NULL, NULL);
        if (c[i].fd < 0)
            zdtm_fail("server: accept: %s", strerror(errno));
        int one = 1;
        setsockopt(c[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(c[i].fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        fcntl(c[i].fd, F_SETFL, O_NONBLOCK);
        remember(&c[i]);
    }
    half.fd = accept(lh, NULL, NULL);
    if (half.fd < 0)
        zdtm_fail("server: accept half: %s", strerror(errno));
    remember(&half);
    char hb[HALF];
    for (int i = 0; i < HALF; i++)
        hb[i] = (char)(i * 7);
    write_full(&half, hb, HALF, "server");
    shutdown(half.fd, SHUT_WR);
    int open = nc;
    while (open > 0) {
        struct pollfd p[MAXC];
        for (int i = 0; i < nc; i++)
            p[i] = (struct pollfd){c[i].fd, POLLIN, 0};
        if (poll(p, nc, -1) < 0) {
            if (errno == EINTR)
                continue;
            zdtm_fail("server: poll: %s", strerror(errno));
        }
        for (int i = 0; i < nc; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)) || c[i].fd < 0)
                continue;
            uint64_t n;
            read_full(&c[i], &n, sizeof n, "server");
            if (n == END) {
                if (!(fcntl(c[i].fd, F_GETFL) & O_NONBLOCK) ||
                    !int_opt(c[i].fd, IPPROTO_TCP, TCP_NODELAY) ||
                    !int_opt(c[i].fd, SOL_SOCKET, SO_KEEPALIVE))
                    zdtm_fail("server: %s: O_NONBLOCK/TCP_NODELAY/SO_KEEPALIVE lost", c[i].name);
                same_addresses(&c[i], "server");
                open--;
                continue;
            }
            if (n != expect[i])
                zdtm_fail("server: %s: got %llu, expected %llu", c[i].name,
                          (unsigned long long)n, (unsigned long long)expect[i]);
            expect[i]++;
            got++;
            n++;
            write_full(&c[i], &n, sizeof n, "server");
        }
    }
    char bye[4];
    read_full(&half, bye, sizeof bye, "server");
    if (memcmp(bye, "bye", 4))
        zdtm_fail("server: half: wrong last message");
    same_addresses(&half, "server");
    printf("server: %llu numbers\n", (unsigned long long)got);
    exit(got > 0 ? 0 : 3);
}

/* A listener on loopback, or with `any` on [::] accepting IPv4 too. */
static int listen_on(int family, int any, uint16_t *port) {
    int l = socket(family, SOCK_STREAM, 0);
    if (l < 0)
        return -1;
    int one = 1, zero = 0;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (any)
        setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    struct sockaddr_storage a;
    memset(&a, 0, sizeof a);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&a;
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof *v4;
    } else {
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a;
        v6->sin6_family = AF_INET6;
        v6->sin6_addr = any ? in6addr_any : in6addr_loopback;
        len = sizeof *v6;
    }
    if (bind(l, (struct sockaddr *)&a, len) || listen(l, 4) ||
        getsockname(l, (struct sockaddr *)&a, &len)) {
        close(l);
        return -1;
    }
    *port = ntohs(((struct sockaddr_in *)&a)->sin_port); /* same offset in v6 */
    return l;
}

static int connect_to(int family, uint16_t port) {
    int s = socket(family, SOCK_STREAM, 0);
    struct sockaddr_storage a;
    memset(&a, 0, sizeof a);
    socklen_t len;
    if (family == AF_INET) {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&a;
        v4->sin_family = AF_INET;
        v4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        v4->sin_port = htons(port);
        len = sizeof *v4;
    } else {
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a;
        v6->sin6_family = AF_INET6;
        v6->sin6_addr = in6addr_loopback;
        v6->sin6_port = htons(port);
        len = sizeof *v6;
    }
    if (s < 0 || connect(s, (struct sockaddr *)&a, len))
        zdtm_fail("connect (family %d): %s", family, strerror(errno));
    return s;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    uint16_t port[MAXC], hport;
    int ls[MAXC], nc = 0;
    /* Listener family, on [::], client family. */
    int lfam[MAXC] = {AF_INET, AF_INET6, AF_INET6}, any[MAXC] = {0, 0, 1};
    int families[MAXC] = {AF_INET, AF_INET6, AF_INET};
    for (int i = 0; i < MAXC; i++) {
        ls[nc] = listen_on(lfam[i], any[i], &port[nc]);
        if (ls[nc] >= 0)
            nc++;
        else if (i == 0)
            zdtm_fail("IPv4 loopback listener: %s", strerror(errno));
        else {
            printf("no IPv6: IPv4 only\n");
            break;
        }
    }
    int lh = listen_on(AF_INET, 0, &hport);
    if (lh < 0)
        zdtm_fail("listener: %s", strerror(errno));
    fflush(stdout);
    pid_t child = fork();
    if (child == 0)
        server(ls, nc, lh);
    static const char *names[MAXC] = {"ipv4", "ipv6", "dual-stack"};
    struct conn c[MAXC], half = {.name = "half"};
    for (int i = 0; i < nc; i++) {
        c[i].name = names[i];
        c[i].fd = connect_to(families[i], port[i]);
        remember(&c[i]);
    }
    half.fd = connect_to(AF_INET, hport);
    remember(&half);
    for (int i = 0; i < nc; i++)
        close(ls[i]);
    close(lh);
    uint64_t next[MAXC] = {0}, reply[MAXC];
    for (int i = 0; i < nc; i++) {
        reply[i] = 1;
        uint64_t buf[WINDOW];
        for (uint64_t k = 0; k < WINDOW; k++)
            buf[k] = k;
        write_full(&c[i], buf, sizeof buf, "client");
        next[i] = WINDOW;
    }
    zdtm_ready();
    uint64_t rounds = 0;
    while (!zdtm_stop_requested()) {
        for (int i = 0; i < nc; i++) {
            for (int k = 0; k < 64; k++) {
                uint64_t r;
                read_full(&c[i], &r, sizeof r, "client");
                if (r != reply[i])
                    zdtm_fail("client: %s: got reply %llu, expected %llu", c[i].name,
                              (unsigned long long)r, (unsigned long long)reply[i]);
                reply[i]++;
                write_full(&c[i], &next[i], sizeof next[i], "client");
                next[i]++;
            }
        }
        if (++rounds % 8 == 0)
            zdtm_msleep(1);
    }
    for (int i = 0; i < nc; i++) {
        /* Numbers 0..next-1 were sent; replies 1..next are due. */
        while (reply[i] <= next[i]) {
            uint64_t r;
            read_full(&c[i], &r, sizeof r, "client");
            if (r != reply[i])
                zdtm_fail("client: %s: got reply %llu, expected %llu", c[i].name,
                          (unsigned long long)r, (unsigned long long)reply[i]);
            reply[i]++;
        }
        same_addresses(&c[i], "client");
        uint64_t end = END;
        write_full(&c[i], &end, sizeof end, "client");
    }
    char hb[HALF + 1];
    read_full(&half, hb, HALF, "client");
    for (int i = 0; i < HALF; i++)
        if (hb[i] != (char)(i * 7))
            zdtm_fail("client: half: byte %d corrupt", i);
    if (read(half.fd, hb, 1) != 0)
        zdtm_fail("client: half: no EOF after the server's data");
    write_full(&half, "bye", 4, "client");
    same_addresses(&half, "client");
    int st;
    if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("server failed (%#x)", st);
    printf("client: %d connection(s), %llu numbers on the first\n", nc,
           (unsigned long long)next[0]);
    zdtm_pass();
}
