/* ucred.c: credentials passed over a unix socket name the pids the program
 * knows. A child, on each request from its parent, sends one message with
 * SCM_CREDENTIALS it fills itself (its own getpid()) and one without (the
 * kernel fills them in, SO_PASSCRED being set on the parent's end); the
 * parent checks that both carry the pid fork() gave it. Without namespaces
 * a restart gives the child a new kernel pid: the inject library translates
 * the pid on the way in (sendmsg) and out (recvmsg). Every other round
 * the child sends both messages with one sendmmsg and the parent receives
 * them with recvmmsg, translated the same way. */
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

/* Fills m (with its control buffer u, zeroed) as send_creds does. */
struct credmsg {
    char byte;
    struct iovec iov;
    union {
        char buf[CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } u;
};

static void fill_creds(struct credmsg *cm, struct msghdr *m, int explicit_creds) {
    memset(cm, 0, sizeof *cm);
    cm->byte = explicit_creds ? 'e' : 'i';
    cm->iov.iov_base = &cm->byte;
    cm->iov.iov_len = 1;
    memset(m, 0, sizeof *m);
    m->msg_iov = &cm->iov;
    m->msg_iovlen = 1;
    if (explicit_creds) {
        m->msg_control = cm->u.buf;
        m->msg_controllen = sizeof cm->u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_CREDENTIALS;
        c->cmsg_len = CMSG_LEN(sizeof(struct ucred));
        struct ucred cr = {.pid = getpid(), .uid = getuid(), .gid = getgid()};
        memcpy(CMSG_DATA(c), &cr, sizeof cr);
    }
}

/* Both messages with one sendmmsg. */
static int send_creds_mmsg(int fd) {
    struct credmsg cm[2];
    struct mmsghdr v[2];
    memset(v, 0, sizeof v);
    fill_creds(&cm[0], &v[0].msg_hdr, 1);
    fill_creds(&cm[1], &v[1].msg_hdr, 0);
    int sent = 0;
    while (sent < 2) {
        int n = sendmmsg(fd, v + sent, 2 - sent, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        for (int i = sent; i < sent + n; i++)
            if (v[i].msg_len != 1)
                return -1;
        sent += n;
    }
    return 0;
}

/* Both messages with recvmmsg (one call or more); pids[k] of each, -1 if
 * none, kinds[k] its byte. */
static void recv_creds_mmsg(int fd, pid_t pids[2], char kinds[2]) {
    union {
        char buf[CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } u[2];
    struct iovec iov[2];
    struct mmsghdr v[2];
    memset(v, 0, sizeof v);
    for (int k = 0; k < 2; k++) {
        iov[k].iov_base = &kinds[k];
        iov[k].iov_len = 1;
        v[k].msg_hdr.msg_iov = &iov[k];
        v[k].msg_hdr.msg_iovlen = 1;
        v[k].msg_hdr.msg_control = u[k].buf;
        v[k].msg_hdr.msg_controllen = sizeof u[k].buf;
    }
    int got = 0;
    while (got < 2) {
        int n = recvmmsg(fd, v + got, 2 - got, 0, NULL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            zdtm_fail("recvmmsg: %s", n < 0 ? strerror(errno) : "end of stream");
        got += n;
    }
    for (int k = 0; k < 2; k++) {
        pids[k] = -1;
        struct msghdr *m = &v[k].msg_hdr;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
                struct ucred cr;
                memcpy(&cr, CMSG_DATA(c), sizeof cr);
                pids[k] = cr.pid;
            }
        }
    }
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
            if (req == '!' ? send_creds_mmsg(sv[1]) : (send_creds(sv[1], 1) || send_creds(sv[1], 0))) {
                fprintf(stderr, "ucred child: sendmsg: %s\n", strerror(errno));
                _exit(1);
            }
        }
    }
    close(sv[1]);
    zdtm_ready();
    long rounds = 0;
    while (!zdtm_stop_requested()) {
        int mmsg = rounds % 2 == 1;
        if (write(sv[0], mmsg ? "!" : "?", 1) != 1)
            zdtm_fail("write: %s", strerror(errno));
        pid_t pids[2];
        char kinds[2] = {0, 0};
        if (mmsg)
            recv_creds_mmsg(sv[0], pids, kinds);
        else
            for (int k = 0; k < 2; k++)
                pids[k] = recv_creds(sv[0], &kinds[k]);
        for (int k = 0; k < 2; k++) {
            char kind = kinds[k];
            pid_t got = pids[k];
            if (got != child)
                zdtm_fail("round %ld (%s): %s credentials name pid %d, the child is %d", rounds,
                          mmsg ? "sendmmsg/recvmmsg" : "sendmsg/recvmsg",
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
