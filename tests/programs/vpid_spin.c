/* vpid_spin: ids read and used without pause while the computation is
 * checkpointed and restarted without namespaces.
 *
 * A checkpoint stops a thread wherever it is, also between a system call
 * and the translation of the id it returned, or between the translation of
 * an id and the call that takes it. Two threads of the parent and the child
 * loop over the pid calls (libc's and syscall()'s) with no pause but a short
 * sleep every few hundred rounds, and check every answer against the ids
 * they had at the start: their own pid and tid, their parent, a signal 0
 * to themselves and to each other, the child's group, a waitpid(WNOHANG)
 * of the running child. Any answer of the run before a restart fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "zdtm.h"

static pid_t me, parent, child;
static volatile int stop;
static volatile unsigned long rounds;

static void pause_a_little(unsigned long n) {
    if ((n & 255) == 0) {
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

/* The checks of one round, as process `who` with tid `tid`. */
static void check(const char *who, pid_t pid, pid_t ppid, pid_t tid) {
    pid_t a = gettid(), b = (pid_t)syscall(SYS_gettid), c = getpid(), d = (pid_t)syscall(SYS_getpid),
          e = getppid(), f = (pid_t)syscall(SYS_getppid);
    if (a != tid || b != tid || c != pid || d != pid || e != ppid || f != ppid)
        zdtm_fail("%s: tid %d/%d (was %d) pid %d/%d (was %d) ppid %d/%d (was %d)", who, a, b, tid,
                  c, d, pid, e, f, ppid);
    if (kill(pid, 0) || syscall(SYS_tgkill, pid, tid, 0) || syscall(SYS_kill, child, 0))
        zdtm_fail("%s: signal 0 to %d/%d or to the child %d: %s", who, pid, tid, child,
                  strerror(errno));
    if (getpgid(child) != child || syscall(SYS_getpgid, child) != child)
        zdtm_fail("%s: the child's group is %d, not %d", who, getpgid(child), child);
}

static void *spin(void *arg) {
    (void)arg;
    pid_t tid = gettid();
    unsigned long n = 0;
    while (!stop) {
        check("parent's thread", me, parent, tid);
        int st;
        pid_t w = waitpid(child, &st, WNOHANG);
        if (w != 0)
            zdtm_fail("waitpid(%d, WNOHANG) of the running child gave %d (%s)", child, w,
                      w < 0 ? strerror(errno) : "a status");
        pause_a_little(++n);
        rounds = n;
    }
    return NULL;
}

static volatile sig_atomic_t term;
static void on_term(int s) {
    (void)s;
    term = 1;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    me = getpid();
    parent = getppid();
    child = fork();
    if (child < 0)
        zdtm_fail("fork");
    if (child == 0) {
        signal(SIGTERM, on_term);
        setpgid(0, 0);
        pid_t self = getpid();
        child = self;
        unsigned long n = 0;
        while (!term) {
            check("child", self, me, self);
            pause_a_little(++n);
        }
        exit(0);
    }
    while (getpgid(child) != child)
        zdtm_msleep(5);
    pthread_t t;
    if (pthread_create(&t, NULL, spin, NULL))
        zdtm_fail("pthread_create");
    zdtm_ready();
    unsigned long n = 0;
    while (!zdtm_stop_requested()) {
        for (int i = 0; i < 64; i++)
            check("parent", me, parent, me);
        pause_a_little(256 * ++n);
    }
    stop = 1;
    pthread_join(t, NULL);
    if (!rounds)
        zdtm_fail("the thread never ran");
    kill(child, SIGTERM);
    int st;
    pid_t w = waitpid(child, &st, 0);
    if (w != child || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("waitpid gave %d (child %d, status %#x)", w, child, st);
    zdtm_pass();
}
