/* locks.c: file locks are held again after restart. The parent holds a
 * flock() lock, two POSIX record locks and an OFD lock; a child checks
 * through descriptions of its own, over and over, that each still
 * conflicts (and that unlocked ranges do not). Usage: locks PREFIX (the
 * files are PREFIX-a, PREFIX-b, PREFIX-c) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

static char path_a[512], path_b[512], path_c[512];

static int open_file(const char *p) {
    int fd = open(p, O_RDWR | O_CREAT, 0600);
    if (fd < 0)
        zdtm_fail("open %s: %s", p, strerror(errno));
    return fd;
}

static void record(int fd, int cmd, short type, off_t start, off_t len) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(fd, cmd, &fl) != 0)
        zdtm_fail("fcntl lock %ld+%ld: %s", (long)start, (long)len, strerror(errno));
}

/* What F_GETLK (or F_OFD_GETLK) says about a write lock on a range. */
static short probe(int fd, int cmd, off_t start, off_t len, pid_t *holder) {
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    if (fcntl(fd, cmd, &fl) != 0)
        zdtm_fail("F_GETLK: %s", strerror(errno));
    if (holder)
        *holder = fl.l_pid;
    return fl.l_type;
}

static void child_checks(pid_t parent) {
    int a = open_file(path_a), b = open_file(path_b), c = open_file(path_c);
    if (flock(a, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
        zdtm_fail("child: the flock() lock on A is gone");
    pid_t who = 0;
    if (probe(b, F_GETLK, 10, 10, &who) != F_WRLCK || who != parent)
        zdtm_fail("child: the write lock on B[10..19] is gone (holder %d)", who);
    if (probe(b, F_GETLK, 1000, 1, &who) != F_RDLCK || who != parent)
        zdtm_fail("child: the read lock on B[100..] is gone");
    if (probe(b, F_GETLK, 30, 10, NULL) != F_UNLCK)
        zdtm_fail("child: B[30..39] is locked, it was not");
    if (probe(c, F_OFD_GETLK, 0, 0, NULL) != F_WRLCK)
        zdtm_fail("child: the OFD lock on C is gone");
    close(a);
    close(b);
    close(c);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    if (argc < 2)
        zdtm_fail("usage: locks PREFIX");
    snprintf(path_a, sizeof path_a, "%s-a", argv[1]);
    snprintf(path_b, sizeof path_b, "%s-b", argv[1]);
    snprintf(path_c, sizeof path_c, "%s-c", argv[1]);
    int a = open_file(path_a), b = open_file(path_b), c = open_file(path_c);
    if (flock(a, LOCK_EX) != 0)
        zdtm_fail("flock: %s", strerror(errno));
    record(b, F_SETLK, F_WRLCK, 10, 10);
    record(b, F_SETLK, F_RDLCK, 100, 0);
    record(c, F_OFD_SETLK, F_WRLCK, 0, 0);

    volatile long *sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        zdtm_fail("mmap");
    pid_t parent = getpid();
    pid_t kid = fork();
    if (kid == 0) {
        prctl(PR_SET_NAME, "locks-child");
        close(a);
        close(b);
        close(c);
        while (!sh[0]) {
            child_checks(parent);
            sh[1]++;
            zdtm_msleep(5);
        }
        child_checks(parent);
        exit(0);
    }
    zdtm_ready();
    while (!zdtm_stop_requested())
        zdtm_msleep(5);
    sh[0] = 1;
    int st;
    if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child failed (%#x)", st);
    printf("%ld checks\n", sh[1]);
    zdtm_pass();
}
