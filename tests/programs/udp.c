/* udp.c: UDP sockets inside the computation survive, with their queues.
 *   udp (socket A: bound to 127.0.0.1, not connected)
 *   udp-peer (socket B: bound to 127.0.0.1, connected to A; forked)
 * A sends datagram n to B with sendto; B checks it and answers n (same
 * length) with send. QUEUED datagrams are always in flight from A to B, so
 * some wait in B's queue (or, as replies, in A's) at checkpoint time; they
 * are put back at restart, so the check is strict: lengths and contents
 * match (message boundaries), none lost, none duplicated. Both sockets keep
 * their addresses (getsockname, and B's getpeername; a change is printed as
 * "ADDRESSES CHANGED", see tcp_stream.c). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
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

#define QUEUED 3
#define END UINT64_MAX

static size_t msg_len(uint64_t seq) { return 8 + (seq * 53) % 900; }

static void fill(unsigned char *b, uint64_t seq) {
    memcpy(b, &seq, 8);
    for (size_t i = 8; i < msg_len(seq); i++)
        b[i] = (unsigned char)(seq * 3 + i);
}

/* Waits up to 10 s for datagram `seq`; fails on anything else. */
static void expect(int fd, uint64_t seq, const char *who) {
    unsigned char b[2048];
    struct pollfd p = {fd, POLLIN, 0};
    int r;
    while ((r = poll(&p, 1, 10000)) < 0 && errno == EINTR) {
    }
    if (r == 0)
        zdtm_fail("%s: datagram %llu lost", who, (unsigned long long)seq);
    ssize_t n = recv(fd, b, sizeof b, 0);
    uint64_t got;
    if (n < 8)
        zdtm_fail("%s: recv: %zd %s", who, n, strerror(errno));
    memcpy(&got, b, 8);
    if (got == END && seq == END)
        return;
    if (got != seq || (size_t)n != msg_len(seq))
        zdtm_fail("%s: got datagram %llu of %zd bytes, expected %llu of %zu", who,
                  (unsigned long long)got, n, (unsigned long long)seq, msg_len(seq));
    unsigned char want[2048];
    fill(want, seq);
    if (memcmp(b, want, n))
        zdtm_fail("%s: datagram %llu corrupt", who, (unsigned long long)seq);
}

static struct sockaddr_in bound(int fd) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t l = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &l))
        zdtm_fail("bind: %s", strerror(errno));
    return a;
}

static void same(int fd, const struct sockaddr_in *want, int peer, const char *who) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    socklen_t l = sizeof a;
    int r = peer ? getpeername(fd, (struct sockaddr *)&a, &l)
                 : getsockname(fd, (struct sockaddr *)&a, &l);
    if (r)
        zdtm_fail("%s: %s: %s", who, peer ? "getpeername" : "getsockname", strerror(errno));
    /* See tcp_stream.c: accepted by the harness only with restart's warning. */
    if (memcmp(&a, want, sizeof a)) {
        printf("ADDRESSES CHANGED: %s: %s\n", who, peer ? "peer address" : "address");
        fflush(stdout);
    }
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    int a = socket(AF_INET, SOCK_DGRAM, 0), b = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in aa = bound(a), ba = bound(b);
    if (connect(b, (struct sockaddr *)&aa, sizeof aa))
        zdtm_fail("connect: %s", strerror(errno));
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_NAME, "udp-peer");
        close(a);
        for (uint64_t seq = 0;; seq++) {
            unsigned char m[2048];
            ssize_t n = recv(b, m, sizeof m, 0);
            uint64_t got;
            if (n < 8)
                zdtm_fail("peer: recv: %s", strerror(errno));
            memcpy(&got, m, 8);
            if (got == END)
                break;
            unsigned char want[2048];
            fill(want, seq);
            if (got != seq || (size_t)n != msg_len(seq) || memcmp(m, want, n))
                zdtm_fail("peer: got datagram %llu of %zd bytes, expected %llu of %zu",
                          (unsigned long long)got, n, (unsigned long long)seq, msg_len(seq));
            if (send(b, m, n, 0) != n)
                zdtm_fail("peer: send: %s", strerror(errno));
        }
        same(b, &ba, 0, "peer");
        same(b, &aa, 1, "peer");
        exit(0);
    }
    close(b);
    uint64_t sent = 0, answered = 0;
    unsigned char m[2048];
    for (; sent < QUEUED; sent++) {
        fill(m, sent);
        sendto(a, m, msg_len(sent), 0, (struct sockaddr *)&ba, sizeof ba);
    }
    zdtm_ready();
    while (!zdtm_stop_requested()) {
        expect(a, answered++, "main");
        fill(m, sent);
        if (sendto(a, m, msg_len(sent), 0, (struct sockaddr *)&ba, sizeof ba) < 0)
            zdtm_fail("sendto: %s", strerror(errno));
        sent++;
        if (sent % 16 == 0)
            zdtm_msleep(1);
    }
    while (answered < sent)
        expect(a, answered++, "main");
    uint64_t end = END;
    sendto(a, &end, 8, 0, (struct sockaddr *)&ba, sizeof ba);
    same(a, &aa, 0, "main");
    int st;
    if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("peer failed (%#x)", st);
    printf("main: %llu datagrams\n", (unsigned long long)sent);
    zdtm_pass();
}
