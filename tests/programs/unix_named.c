/* unix_named.c: connected named unix sockets survive.
 *   unix_named (server) listens on a path (argv[1], SOCK_STREAM) and on an
 *   abstract name ("@" + argv[1], SOCK_SEQPACKET); the forked client
 *   unix_named-cli connects to both and the server accepts.
 * - stream: the server keeps WINDOW numbers in flight to the client, which
 *   answers n with n+1; both check the sequence;
 * - seqpacket: QUEUED messages of varying lengths always wait on the
 *   client's end; the client checks each one's length and contents.
 * - the accepted sockets' getsockname is the listener's name, the client
 *   ends are unnamed, and the client's getpeername is the listener's name,
 *   before and after restart. The path listener stays open (and must
 *   accept again); the abstract one is closed after the accept. */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

#define WINDOW 64
#define QUEUED 3
#define END UINT64_MAX

static struct sockaddr_un path_addr, abs_addr;
static socklen_t path_len, abs_len;

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

static size_t msg_len(uint64_t seq) { return 8 + (seq * 41) % 500; }

static void send_msg(int fd, uint64_t seq) {
    unsigned char b[1024];
    memcpy(b, &seq, 8);
    for (size_t i = 8; i < msg_len(seq); i++)
        b[i] = (unsigned char)(seq + 5 * i);
    if (send(fd, b, msg_len(seq), 0) != (ssize_t)msg_len(seq))
        zdtm_fail("seqpacket send %llu: %s", (unsigned long long)seq, strerror(errno));
}

static void recv_msg(int fd, uint64_t seq) {
    unsigned char b[2048];
    ssize_t n = recv(fd, b, sizeof b, 0);
    uint64_t got = 0;
    if (n >= 8)
        memcpy(&got, b, 8);
    if (got != seq || (size_t)n != msg_len(seq))
        zdtm_fail("client: seqpacket: got %llu (%zd bytes), expected %llu (%zu bytes)",
                  (unsigned long long)got, n, (unsigned long long)seq, msg_len(seq));
    for (size_t i = 8; i < (size_t)n; i++)
        if (b[i] != (unsigned char)(seq + 5 * i))
            zdtm_fail("client: seqpacket message %llu corrupt", (unsigned long long)seq);
}

/* getsockname (or getpeername) of fd equals want (len 0: unnamed). */
static void check_name(int fd, int peer, const struct sockaddr_un *want, socklen_t wlen,
                       const char *what) {
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    socklen_t l = sizeof a;
    int r = peer ? getpeername(fd, (struct sockaddr *)&a, &l)
                 : getsockname(fd, (struct sockaddr *)&a, &l);
    if (r)
        zdtm_fail("%s: %s", what, strerror(errno));
    if (wlen == 0) {
        if (l != sizeof(sa_family_t))
            zdtm_fail("%s: should be unnamed (length %u)", what, l);
        return;
    }
    if (l != wlen || memcmp(&a, want, wlen))
        zdtm_fail("%s: name differs", what);
}

static void check_names(int st, int sq, int cst, int csq, const char *when) {
    char w[128];
    snprintf(w, sizeof w, "%s: accepted stream getsockname", when);
    check_name(st, 0, &path_addr, path_len, w);
    snprintf(w, sizeof w, "%s: accepted seqpacket getsockname", when);
    check_name(sq, 0, &abs_addr, abs_len, w);
    if (cst >= 0) {
        snprintf(w, sizeof w, "%s: client stream getsockname", when);
        check_name(cst, 0, NULL, 0, w);
        snprintf(w, sizeof w, "%s: client stream getpeername", when);
        check_name(cst, 1, &path_addr, path_len, w);
        snprintf(w, sizeof w, "%s: client seqpacket getpeername", when);
        check_name(csq, 1, &abs_addr, abs_len, w);
    }
}

static void client(void) {
    prctl(PR_SET_NAME, "unix_named-cli");
    int s = socket(AF_UNIX, SOCK_STREAM, 0), q = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    if (connect(s, (struct sockaddr *)&path_addr, path_len) ||
        connect(q, (struct sockaddr *)&abs_addr, abs_len))
        zdtm_fail("client: connect: %s", strerror(errno));
    uint64_t expect = 0, n, qseq = 0;
    for (;;) {
        read_full(s, &n, sizeof n, "client");
        if (n == END)
            break;
        if (n != expect)
            zdtm_fail("client: got %llu, expected %llu", (unsigned long long)n,
                      (unsigned long long)expect);
        expect++;
        write_u64(s, n + 1, "client");
        if (n % 4 == 0)
            recv_msg(q, qseq++);
    }
    check_name(s, 0, NULL, 0, "client stream getsockname");
    check_name(s, 1, &path_addr, path_len, "client stream getpeername");
    check_name(q, 1, &abs_addr, abs_len, "client seqpacket getpeername");
    printf("client: %llu numbers, %llu messages\n", (unsigned long long)expect,
           (unsigned long long)qseq);
    /* Tell the server how many messages were taken. */
    write_u64(s, qseq, "client");
    exit(0);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    if (argc < 2)
        zdtm_fail("usage: unix_named SOCKET_PATH");
    path_addr.sun_family = AF_UNIX;
    snprintf(path_addr.sun_path, sizeof path_addr.sun_path, "%s", argv[1]);
    path_len = offsetof(struct sockaddr_un, sun_path) + strlen(path_addr.sun_path) + 1;
    abs_addr.sun_family = AF_UNIX;
    snprintf(abs_addr.sun_path + 1, sizeof abs_addr.sun_path - 1, "dmtcp-test:%s", argv[1]);
    abs_len = offsetof(struct sockaddr_un, sun_path) + 1 + strlen(abs_addr.sun_path + 1);
    unlink(argv[1]);
    int ls = socket(AF_UNIX, SOCK_STREAM, 0), lq = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    if (bind(ls, (struct sockaddr *)&path_addr, path_len) || listen(ls, 4) ||
        bind(lq, (struct sockaddr *)&abs_addr, abs_len) || listen(lq, 4))
        zdtm_fail("listen: %s", strerror(errno));
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        close(ls);
        close(lq);
        client();
    }
    int st = accept(ls, NULL, NULL), sq = accept(lq, NULL, NULL);
    if (st < 0 || sq < 0)
        zdtm_fail("accept: %s", strerror(errno));
    close(lq);
    check_names(st, sq, -1, -1, "before");
    uint64_t next = 0, reply = 1, qnext = 0;
    for (; qnext < QUEUED; qnext++)
        send_msg(sq, qnext);
    for (; next < WINDOW; next++)
        write_u64(st, next, "server");
    zdtm_ready();
    while (!zdtm_stop_requested()) {
        uint64_t r;
        read_full(st, &r, sizeof r, "server");
        if (r != reply)
            zdtm_fail("server: got reply %llu, expected %llu", (unsigned long long)r,
                      (unsigned long long)reply);
        /* The client takes one message per 4 numbers: keep QUEUED waiting. */
        if ((r - 1) % 4 == 0)
            send_msg(sq, qnext++);
        reply++;
        write_u64(st, next++, "server");
        if (next % 16 == 0)
            zdtm_msleep(2);
    }
    while (reply <= next) {
        uint64_t r;
        read_full(st, &r, sizeof r, "server");
        if (r != reply)
            zdtm_fail("server: got reply %llu, expected %llu", (unsigned long long)r,
                      (unsigned long long)reply);
        if ((r - 1) % 4 == 0)
            send_msg(sq, qnext++);
        reply++;
    }
    check_names(st, sq, -1, -1, "after");
    write_u64(st, END, "server");
    uint64_t taken;
    read_full(st, &taken, sizeof taken, "server");
    if (qnext - taken != QUEUED)
        zdtm_fail("%llu seqpacket messages sent, %llu taken: expected %d left",
                  (unsigned long long)qnext, (unsigned long long)taken, QUEUED);
    int status;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
        zdtm_fail("client failed (%#x)", status);
    /* The path listener accepts again. */
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&path_addr, path_len))
        zdtm_fail("the path listener does not accept: %s", strerror(errno));
    int a = accept(ls, NULL, NULL);
    if (a < 0)
        zdtm_fail("accept after restart: %s", strerror(errno));
    printf("server: %llu numbers, %llu messages\n", (unsigned long long)next,
           (unsigned long long)qnext);
    zdtm_pass();
}
