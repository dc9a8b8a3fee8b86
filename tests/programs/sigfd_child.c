/* sigfd_child.c: SIGCHLD read through a signalfd names the child by the
 * pid fork returned, across restarts (without namespaces the kernel pid of
 * a restored child changes; the record's ssi_pid must still be the pid
 * the program knows).
 *
 * SIGCHLD is blocked and read from a signalfd (and, at the end, from a
 * dup2 of it). A "keeper" child made before READY waits on a pipe through
 * every restart; meanwhile a child that exits at once is made every 20 ms
 * and must be reported with its own pid, which waitpid then reaps. At the
 * end the keeper is told to exit: its record must carry the keeper's pid,
 * waitpid(that pid) must reap it with status 7. A second keeper, released
 * last, is read with readv into two buffers that split the record inside
 * ssi_pid. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

/* Reads one record from `fd` (waiting at most 5 s; with `split`, by readv
 * into two buffers that split ssi_pid) and returns its pid. */
static pid_t child_record(int fd, int split) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n;
    do
        n = poll(&p, 1, 5000);
    while (n < 0 && errno == EINTR);
    if (n != 1)
        zdtm_fail("no SIGCHLD record within 5 s (poll %d: %s)", n, strerror(errno));
    struct signalfd_siginfo si;
    ssize_t r;
    char *b = (char *)&si;
    struct iovec iov[2] = {{b, 14}, {b + 14, sizeof si - 14}};
    do
        r = split ? readv(fd, iov, 2) : read(fd, &si, sizeof si);
    while (r < 0 && errno == EINTR);
    if (r != sizeof si)
        zdtm_fail("read signalfd: %zd (%s)", r, strerror(errno));
    if (si.ssi_signo != SIGCHLD)
        zdtm_fail("signalfd gave signal %u", si.ssi_signo);
    return (pid_t)si.ssi_pid;
}

/* A child that exits with `code` once a byte comes on `rd` (it closes
 * the write ends `w1`, `w2` it inherited). */
static pid_t keeper_child(int rd, int w1, int w2, int code) {
    pid_t k = fork();
    if (k < 0)
        zdtm_fail("fork: %s", strerror(errno));
    if (k == 0) {
        char c;
        close(w1);
        close(w2);
        _exit(read(rd, &c, 1) == 1 ? code : 1);
    }
    return k;
}

static void reap(pid_t reported, pid_t expected, int status, const char *what) {
    if (reported != expected)
        zdtm_fail("%s: SIGCHLD record names pid %d, fork returned %d", what, reported, expected);
    int st;
    pid_t w = waitpid(reported, &st, 0);
    if (w != expected || !WIFEXITED(st) || WEXITSTATUS(st) != status)
        zdtm_fail("%s: waitpid(%d) gave %d (%s), status %#x", what, reported, w,
                  w < 0 ? strerror(errno) : "-", st);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &set, NULL))
        zdtm_fail("sigprocmask: %s", strerror(errno));
    int sfd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sfd < 0)
        zdtm_fail("signalfd: %s", strerror(errno));
    int go[2], go2[2];
    if (pipe(go) || pipe(go2))
        zdtm_fail("pipe: %s", strerror(errno));
    pid_t keeper = keeper_child(go[0], go[1], go2[1], 7);
    pid_t keeper2 = keeper_child(go2[0], go[1], go2[1], 9);
    close(go[0]);
    close(go2[0]);
    zdtm_ready();
    unsigned long n = 0;
    while (!zdtm_stop_requested()) {
        pid_t c = fork();
        if (c < 0)
            zdtm_fail("fork: %s", strerror(errno));
        if (c == 0)
            _exit(3);
        reap(child_record(sfd, 0), c, 3, "short child");
        n++;
        zdtm_msleep(20);
    }
    /* The keeper, through a copy of the signalfd made now. */
    int copy = dup2(sfd, 40);
    if (copy != 40)
        zdtm_fail("dup2: %s", strerror(errno));
    if (write(go[1], "x", 1) != 1)
        zdtm_fail("write: %s", strerror(errno));
    reap(child_record(copy, 0), keeper, 7, "keeper");
    if (write(go2[1], "x", 1) != 1)
        zdtm_fail("write: %s", strerror(errno));
    reap(child_record(sfd, 1), keeper2, 9, "second keeper (readv)");
    printf("children %lu, keepers %d %d\n", n, keeper, keeper2);
    zdtm_pass();
}
