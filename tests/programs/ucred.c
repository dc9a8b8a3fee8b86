/* ucred.c: credentials passed over a unix socket name the pids the program
 * knows. A child, on each request from its parent, sends one message with
 * SCM_CREDENTIALS it fills itself (its own getpid()) and one without (the
 * kernel fills them in, SO_PASSCRED being set on the parent's end); the
 * parent checks that both carry the pid fork() gave it. Without namespaces
 * a restart gives the child a new kernel pid: the inject library translates
 * the pid on the way in (sendmsg) and out (recvmsg). */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

static int send_creds(int fd, int explicit_creds) {
    char byte = explicit_creds ? 'e' : 'i';
    struct iovec iov = {&byte, 1};
    union {
        char buf[CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    if (explicit_creds) {
        memset(&u, 0, sizeof u);
        m.msg_control = u.buf;
        m.msg_controllen = sizeof u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_CREDENTIALS;
        c->cmsg_len = CMSG_LEN(sizeof(struct ucred));
        struct ucred cr = {.pid = getpid(), .uid = getuid(), .gid = getgid()};
        memcpy(CMSG_DATA(c), &cr, sizeof cr);
    }
    return sendmsg(fd, &m, 0) == 1 ? 0 : -1;
}

/* Receives one message; returns the pid of its credentials, -1 if none. */
static pid_t recv_creds(int fd, char *kind) {
    struct iovec iov = {kind, 1};
    union {
        char buf[CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } u;
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                       .msg_controllen = sizeof u.buf};
    ssize_t n;
    do
        n = recvmsg(fd, &m, 0);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        zdtm_fail("recvmsg: %s", n < 0 ? strerror(errno) : "end of stream");
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
            struct ucred cr;
            memcpy(&cr, CMSG_DATA(c), sizeof cr);
            return cr.pid;
        }
    }
    return -1;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        zdtm_fail("socketpair: %s", strerror(errno));
    int on = 1;
    if (setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &on, sizeof on))
        zdtm_fail("SO_PASSCRED: %s", strerror(errno));
    pid_t child = fork();
    if (child < 0)
        zdtm_fail("fork: %s", strerror(errno));
    if (child == 0) {
        close(sv[0]);
        char req;
        for (;;) {
            ssize_t n = read(sv[1], &req, 1);
            if (n < 0 && errno == EINTR)
                continue;
            if (n != 1)
                _exit(0);
            if (send_creds(sv[1], 1) || send_creds(sv[1], 0)) {
                fprintf(stderr, "ucred child: sendmsg: %s\n", strerror(errno));
                _exit(1);
            }
        }
    }
    close(sv[1]);
    zdtm_ready();
    long rounds = 0;
    while (!zdtm_stop_requested()) {
        if (write(sv[0], "?", 1) != 1)
            zdtm_fail("write: %s", strerror(errno));
        for (int k = 0; k < 2; k++) {
            char kind = 0;
            pid_t got = recv_creds(sv[0], &kind);
            if (got != child)
                zdtm_fail("round %ld: %s credentials name pid %d, the child is %d", rounds,
                          kind == 'e' ? "explicit" : "kernel-filled", (int)got, (int)child);
        }
        rounds++;
        zdtm_msleep(20);
    }
    close(sv[0]);
    int st;
    if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        zdtm_fail("child ended badly (status %#x)", st);
    zdtm_pass();
}
