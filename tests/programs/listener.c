/* listener.c: listening sockets survive. A server thread blocks in accept()
 * on a TCP listener (127.0.0.1, port picked at start) and another on a unix
 * listener (a path in the work dir) most of the time; EINTR from accept is
 * fatal. The main thread connects, sends n and expects n+1. After the last
 * restart the same addresses must accept new connections. (A connection
 * still in a listener's accept queue at checkpoint time is not restored,
 * so an exchange that breaks is retried.) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include "zdtm.h"

static int tcp_l, unix_l;
static struct sockaddr_in tcp_addr;
static struct sockaddr_un unix_addr;

static void *serve(void *arg) {
    int l = *(int *)arg;
    for (;;) {
        int c = accept(l, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR)
                zdtm_fail("accept: EINTR");
            continue;
        }
        long n;
        if (read(c, &n, sizeof n) == sizeof n) {
            n++;
            if (write(c, &n, sizeof n) != sizeof n) {
                /* peer gone */
            }
        }
        close(c);
    }
    return NULL;
}

static int exchange(const struct sockaddr *a, socklen_t len, int family, long n) {
    int s = socket(family, SOCK_STREAM, 0);
    long r = -1;
    int ok = s >= 0 && connect(s, a, len) == 0 && write(s, &n, sizeof n) == sizeof n &&
             read(s, &r, sizeof r) == sizeof r && r == n + 1;
    if (s >= 0)
        close(s);
    return ok;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    if (argc < 2)
        zdtm_fail("usage: listener SOCKET_PATH");
    tcp_l = socket(AF_INET, SOCK_STREAM, 0);
    /* As servers do: without it, the killed process's connections lingering
     * in TIME_WAIT keep the port from being bound again at restart. */
    int one = 1;
    setsockopt(tcp_l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    tcp_addr.sin_family = AF_INET;
    tcp_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof tcp_addr;
    if (bind(tcp_l, (struct sockaddr *)&tcp_addr, sizeof tcp_addr) || listen(tcp_l, 16) ||
        getsockname(tcp_l, (struct sockaddr *)&tcp_addr, &alen))
        zdtm_fail("tcp listener");
    unix_l = socket(AF_UNIX, SOCK_STREAM, 0);
    unix_addr.sun_family = AF_UNIX;
    snprintf(unix_addr.sun_path, sizeof unix_addr.sun_path, "%s", argv[1]);
    unlink(argv[1]);
    if (bind(unix_l, (struct sockaddr *)&unix_addr, sizeof unix_addr) || listen(unix_l, 16))
        zdtm_fail("unix listener");
    pthread_t t1, t2;
    pthread_create(&t1, NULL, serve, &tcp_l);
    pthread_create(&t2, NULL, serve, &unix_l);
    zdtm_ready();
    long n = 0, ok = 0;
    while (!zdtm_stop_requested()) {
        ok += exchange((struct sockaddr *)&tcp_addr, sizeof tcp_addr, AF_INET, n++);
        ok += exchange((struct sockaddr *)&unix_addr, sizeof unix_addr, AF_UNIX, n++);
        zdtm_msleep(100);
    }
    /* After the last restart: both listeners must serve again. */
    for (int i = 0; i < 10; i++) {
        if (!exchange((struct sockaddr *)&tcp_addr, sizeof tcp_addr, AF_INET, n++))
            zdtm_fail("TCP listener does not accept after restart");
        if (!exchange((struct sockaddr *)&unix_addr, sizeof unix_addr, AF_UNIX, n++))
            zdtm_fail("unix listener does not accept after restart");
    }
    struct sockaddr_in now;
    alen = sizeof now;
    if (getsockname(tcp_l, (struct sockaddr *)&now, &alen) || now.sin_port != tcp_addr.sin_port)
        zdtm_fail("TCP listener port changed");
    printf("exchanges: %ld\n", ok);
    zdtm_pass();
}
