/* tw_server.c: a listener without SO_REUSEADDR (as DMTCP's epoll1 and
 * client-server tests) whose server side closed a connection first just
 * before the checkpoint, so that connection lingers in TIME_WAIT on the
 * listener's port. After restart the listener must be back on the same
 * port and accept: at the end the program connects to itself. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "zdtm.h"

static int serve_one(int l) {
    int c = accept(l, NULL, NULL);
    if (c < 0)
        return -1;
    char b[8];
    if (read(c, b, sizeof b) > 0 && write(c, "pong", 4) != 4) {
        /* client gone */
    }
    close(c); /* the server closes first: TIME_WAIT is on this side */
    return 0;
}

static int ping(const struct sockaddr_in *a, int l) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (const struct sockaddr *)a, sizeof *a))
        zdtm_fail("connect to the listener: %s", strerror(errno));
    if (write(s, "ping", 4) != 4)
        zdtm_fail("write: %s", strerror(errno));
    if (serve_one(l))
        zdtm_fail("accept: %s", strerror(errno));
    char b[8];
    ssize_t n = read(s, b, sizeof b);
    if (n != 4 || memcmp(b, "pong", 4))
        zdtm_fail("no pong (%zd)", n);
    /* Wait for the server's FIN before closing: the server side keeps
     * TIME_WAIT. */
    n = read(s, b, sizeof b);
    close(s);
    return n == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 16) ||
        getsockname(l, (struct sockaddr *)&a, &len))
        zdtm_fail("listen: %s", strerror(errno));
    if (ping(&a, l))
        zdtm_fail("the first connection did not end as expected");
    zdtm_ready();
    while (!zdtm_stop_requested())
        zdtm_msleep(50);
    struct sockaddr_in now;
    len = sizeof now;
    if (getsockname(l, (struct sockaddr *)&now, &len) || now.sin_port != a.sin_port)
        zdtm_fail("the listener is not on its port any more");
    if (ping(&a, l))
        zdtm_fail("the connection after restart did not end as expected");
    zdtm_pass();
}
