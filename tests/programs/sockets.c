/* sockets.c: unix socket pairs across checkpoint/restart.
 *   sockets (parent) <--SOCK_STREAM socketpair--> sockets-child
 * - the parent keeps WINDOW numbers in flight to the child, which answers
 *   each n with n+1; both check the sequence (no loss, no duplicate), so
 *   bytes in flight at checkpoint time in both directions must survive;
 * - a SOCK_DGRAM and a SOCK_SEQPACKET socketpair (inherited by the child
 *   too, so their descriptions are shared by two processes) always hold 3
 *   unread messages of varying lengths: each iteration the parent reads the
 *   oldest, checks its length (message boundary) and contents, and sends a
 *   new one; the seqpacket reading end is O_NONBLOCK and must stay so. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

#define WINDOW 8
#define QUEUED 3
#define END UINT64_MAX

static void read_full(int fd, void *buf, size_t len, const char *who) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            zdtm_fail("%s: read stream: %s", who, n ? strerror(errno) : "EOF");
        got += n;
    }
}

static void write_u64(int fd, uint64_t v, const char *who) {
    if (write(fd, &v, sizeof v) != sizeof v)
        zdtm_fail("%s: write stream: %s", who, strerror(errno));
}

static int child(int s) {
    prctl(PR_SET_NAME, "sockets-child");
    uint64_t expect = 0, n;
    for (;;) {
        read_full(s, &n, sizeof n, "child");
        if (n == END)
            break;
        if (n != expect)
            zdtm_fail("child: got %llu, expected %llu", (unsigned long long)n,
                      (unsigned long long)expect);
        expect++;
        write_u64(s, n + 1, "child");
    }
    printf("child: %llu numbers\n", (unsigned long long)expect);
    exit(expect > 0 ? 0 : 3);
}

/* Message `seq` of a datagram channel: 8 bytes of seq, then a pattern;
 * lengths vary so merged or split messages are caught. */
static size_t msg_len(uint64_t seq) { return 8 + (seq * 37) % 300; }

static void send_msg(int fd, uint64_t seq, const char *what) {
    unsigned char b[512];
    size_t len = msg_len(seq);
    memcpy(b, &seq, 8);
    for (size_t i = 8; i < len; i++)
        b[i] = (unsigned char)(seq + i);
    if (send(fd, b, len, MSG_DONTWAIT) != (ssize_t)len)
        zdtm_fail("%s: send %llu: %s", what, (unsigned long long)seq, strerror(errno));
}

static void recv_msg(int fd, uint64_t seq, const char *what) {
    unsigned char b[1024];
    ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
    if (n < 0)
        zdtm_fail("%s: message %llu missing: %s", what, (unsigned long long)seq, strerror(errno));
    uint64_t got;
    memcpy(&got, b, 8);
    if (got != seq || (size_t)n != msg_len(seq))
        zdtm_fail("%s: got message %llu of %zd bytes, expected %llu of %zu", what,
                  (unsigned long long)got, n, (unsigned long long)seq, msg_len(seq));
    for (size_t i = 8; i < (size_t)n; i++)
        if (b[i] != (unsigned char)(seq + i))
            zdtm_fail("%s: message %llu corrupt at byte %zu", what, (unsigned long long)seq, i);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    int s[2], d[2], q[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, s) || socketpair(AF_UNIX, SOCK_DGRAM, 0, d) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET, 0, q))
        zdtm_fail("socketpair: %s", strerror(errno));
    if (fcntl(q[1], F_SETFL, O_NONBLOCK))
        zdtm_fail("fcntl");
    pid_t c = fork();
    if (c == 0) {
        close(s[0]);
        child(s[1]);
    }
    close(s[1]);
    uint64_t dseq = 0, dnext = 0, next = 0, reply = 1;
    for (; dnext < QUEUED; dnext++) {
        send_msg(d[0], dnext, "dgram");
        send_msg(q[0], dnext, "seqpacket");
    }
    for (; next < WINDOW; next++)
        write_u64(s[0], next, "parent");
    zdtm_ready();
    while (!zdtm_stop_requested()) {
        uint64_t r;
        read_full(s[0], &r, sizeof r, "parent");
        if (r != reply)
            zdtm_fail("parent: got reply %llu, expected %llu", (unsigned long long)r,
                      (unsigned long long)reply);
        reply++;
        write_u64(s[0], next++, "parent");
        recv_msg(d[1], dseq, "dgram");
        recv_msg(q[1], dseq, "seqpacket");
        dseq++;
        send_msg(d[0], dnext, "dgram");
        send_msg(q[0], dnext, "seqpacket");
        dnext++;
        if (next % 16 == 0)
            zdtm_msleep(2);
    }
    /* Collect the replies still in flight, then stop the child. */
    while (reply <= next) {
        uint64_t r;
        read_full(s[0], &r, sizeof r, "parent");
        if (r != reply)
            zdtm_fail("parent: got reply %llu, expected %llu", (unsigned long long)r,
                      (unsigned long long)reply);
        reply++;
    }
    write_u64(s[0], END, "parent");
    int st;
    if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child failed (%#x)", st);
    /* Exactly QUEUED messages are left on each datagram channel. */
    for (int i = 0; i < QUEUED; i++, dseq++) {
        recv_msg(d[1], dseq, "dgram");
        recv_msg(q[1], dseq, "seqpacket");
    }
    char b[8];
    if (recv(d[1], b, sizeof b, MSG_DONTWAIT) >= 0 || recv(q[1], b, sizeof b, MSG_DONTWAIT) >= 0)
        zdtm_fail("more than %d messages were queued", QUEUED);
    if (!(fcntl(q[1], F_GETFL) & O_NONBLOCK) || (fcntl(q[0], F_GETFL) & O_NONBLOCK))
        zdtm_fail("O_NONBLOCK flags changed");
    printf("parent: %llu numbers, %llu messages\n", (unsigned long long)next,
           (unsigned long long)dseq);
    zdtm_pass();
}
