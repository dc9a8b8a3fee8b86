/* dropped_unix.c: a unix stream socket whose peer is closed with 256 bytes
 * still queued (DMTCP's stale-fd). Across checkpoints and restarts it must
 * stay what it is: the 256 bytes, then end of file; writing fails with
 * EPIPE; poll reports POLLHUP. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "zdtm.h"

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    int sv[2];
    char out[256];
    for (int i = 0; i < 256; i++)
        out[i] = (char)i;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || write(sv[1], out, sizeof out) != sizeof out)
        zdtm_fail("socketpair: %s", strerror(errno));
    close(sv[1]);
    zdtm_ready();
    while (!zdtm_stop_requested())
        zdtm_msleep(50);
    struct pollfd p = {.fd = sv[0], .events = POLLIN};
    if (poll(&p, 1, 0) != 1 || !(p.revents & POLLHUP))
        zdtm_fail("poll: revents 0x%x, no POLLHUP", p.revents);
    char in[512];
    ssize_t n = 0, r;
    while ((r = read(sv[0], in + n, sizeof in - n)) > 0)
        n += r;
    if (r < 0)
        zdtm_fail("read: %s", strerror(errno));
    if (n != 256 || memcmp(in, out, 256))
        zdtm_fail("read %zd bytes, not the 256 queued", n);
    if (write(sv[0], "x", 1) != -1 || errno != EPIPE)
        zdtm_fail("write to the closed peer: %s", strerror(errno));
    zdtm_pass();
}
