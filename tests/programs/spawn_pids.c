/* spawn_pids: children made by posix_spawn, vfork, system, popen, glibc's
 * clone() and syscall(SYS_clone) / syscall(SYS_fork), and threads made by
 * pthread_create, without namespaces never get a pid (a thread: an id)
 * that names another process of the program.
 *
 * The parent has a child that sleeps. On each SIGUSR1 it makes a burst of
 * children: /bin/true by posix_spawn and by vfork+execve, a child by
 * clone() on a stack of its own and one by a fork-like syscall(SYS_clone)
 * or syscall(SYS_fork) in turn (and, in turn, `true` by system and
 * `echo x` read through popen), and a thread (joinable, and every other
 * time detached), and checks that
 * each new pid is none
 * of the pids it knows (its own, its parent's, its child's), that waitpid
 * of it gives its exit status, and that its child still answers to its
 * pid; then it prints "burst N done". It prints "ids child N" at start so
 * that the test can make the kernel's next pid the child's virtual pid
 * after a restart (when its kernel pid is another one), as a pid wrap
 * would, before it asks for a burst. (Bursts, not a steady stream: a
 * checkpoint that catches a child in the middle of its exec is another
 * matter, not this test's.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

extern char **environ;

static int clone_child(void *arg) {
    (void)arg;
    return 5;
}

static char clone_stack[64 * 1024] __attribute__((aligned(16)));

static pid_t me, parent, child;

/* Fails if `p` (made by `what`) is a pid the program knows. */
static void unknown(long p, const char *what) {
    if (p == me || p == parent || p == child)
        zdtm_fail("%s gave pid %ld, which is also %s", what, p,
                  p == me ? "mine" : p == parent ? "my parent's" : "my child's");
}

/* A child by glibc's clone() on a stack of its own, checked and reaped. */
static void clone_child_checked(void) {
    int st;
    pid_t c = clone(clone_child, clone_stack + sizeof clone_stack, SIGCHLD, NULL);
    if (c < 0)
        zdtm_fail("clone: %s", strerror(errno));
    unknown(c, "clone");
    if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 5)
        zdtm_fail("waitpid(%d) of the clone child: status %#x", c, st);
}

/* A child by a fork-like syscall(SYS_clone) (`clone_call`) or
 * syscall(SYS_fork), checked and reaped. */
static void raw_child_checked(int clone_call) {
    int st;
    const char *what = clone_call ? "raw clone" : "raw fork";
    long k = clone_call ? syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0) : syscall(SYS_fork);
    if (k == 0)
        _exit(6);
    if (k < 0)
        zdtm_fail("%s: %s", what, strerror(errno));
    unknown(k, what);
    if (waitpid((pid_t)k, &st, 0) != k || !WIFEXITED(st) || WEXITSTATUS(st) != 6)
        zdtm_fail("waitpid(%ld) of the %s child: status %#x", k, what, st);
}

static pid_t thread_tid;
static volatile int detached_tid;

static void *thread_main(void *arg) {
    pid_t t = (pid_t)syscall(SYS_gettid);
    if (arg)
        __atomic_store_n(&detached_tid, t, __ATOMIC_RELEASE);
    else
        thread_tid = t;
    return NULL;
}

/* A thread by pthread_create (`detached`: a detached one, waited for
 * through the id it stores), its id checked. */
static void thread_checked(int detached) {
    pthread_t th;
    pthread_attr_t a;
    pthread_attr_init(&a);
    if (detached)
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    __atomic_store_n(&detached_tid, 0, __ATOMIC_RELEASE);
    int err = pthread_create(&th, &a, thread_main, detached ? &a : NULL);
    pthread_attr_destroy(&a);
    if (err)
        zdtm_fail("pthread_create: %s", strerror(err));
    pid_t t;
    if (detached) {
        while (!(t = __atomic_load_n(&detached_tid, __ATOMIC_ACQUIRE)))
            sched_yield();
    } else {
        if ((err = pthread_join(th, NULL)))
            zdtm_fail("pthread_join: %s", strerror(err));
        t = thread_tid;
    }
    unknown(t, detached ? "pthread_create (detached)" : "pthread_create");
}

static volatile sig_atomic_t bursts_asked;
static void on_usr1(int s) {
    (void)s;
    bursts_asked++;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    me = getpid();
    parent = getppid();
    child = fork();
    if (child < 0)
        zdtm_fail("fork");
    if (child == 0) {
        for (;;)
            pause();
    }
    signal(SIGUSR1, on_usr1);
    printf("ids child %d\n", child);
    fflush(stdout);
    zdtm_ready();
    unsigned long n = 0;
    int bursts = 0;
    while (!zdtm_stop_requested()) {
        if (bursts == bursts_asked) {
            zdtm_msleep(5);
            continue;
        }
        /* The burst's first child, the one the test may have made the
         * kernel's next pid collide with: posix_spawn's (first in the
         * loop), then clone()'s, a raw clone's, a raw fork's, a thread's. */
        if (bursts % 5 == 1)
            clone_child_checked();
        else if (bursts % 5 == 2 || bursts % 5 == 3)
            raw_child_checked(bursts % 5 == 2);
        else if (bursts % 5 == 4)
            thread_checked(0);
        for (int i = 0; i < 40; i++, n++) {
            pid_t p;
            char *args[] = { "true", NULL };
            int err = posix_spawn(&p, "/bin/true", NULL, NULL, args, environ);
            if (err)
                zdtm_fail("posix_spawn: %s", strerror(err));
            if (p == me || p == parent || p == child)
                zdtm_fail("posix_spawn gave pid %d, which is also %s", p,
                          p == me ? "mine" : p == parent ? "my parent's" : "my child's");
            int st;
            pid_t w = waitpid(p, &st, 0);
            if (w != p || !WIFEXITED(st) || WEXITSTATUS(st))
                zdtm_fail("waitpid(%d) gave %d, status %#x", p, w, st);
            pid_t v = vfork();
            if (v == 0) {
                execve("/bin/true", args, environ);
                _exit(127);
            }
            if (v < 0)
                zdtm_fail("vfork: %s", strerror(errno));
            if (v == me || v == parent || v == child)
                zdtm_fail("vfork gave pid %d, which is also %s", v,
                          v == me ? "mine" : v == parent ? "my parent's" : "my child's");
            if (waitpid(v, &st, 0) != v || !WIFEXITED(st) || WEXITSTATUS(st))
                zdtm_fail("waitpid(%d) of the vfork child: status %#x", v, st);
            clone_child_checked();
            raw_child_checked(n % 2);
            thread_checked(n % 2);
            if (n % 8 == 0) {
                int r = system("true");
                if (r != 0)
                    zdtm_fail("system(\"true\") gave %#x", r);
                FILE *f = popen("echo x", "r");
                char line[16] = "";
                if (!f || !fgets(line, sizeof line, f) || strcmp(line, "x\n") || pclose(f))
                    zdtm_fail("popen(\"echo x\") read '%s'", line);
            }
            if (kill(child, 0) || waitpid(child, &st, WNOHANG) != 0)
                zdtm_fail("my child %d does not answer: %s", child, strerror(errno));
        }
        printf("burst %d done\n", ++bursts);
        fflush(stdout);
    }
    kill(child, SIGKILL);
    int st;
    if (waitpid(child, &st, 0) != child || !WIFSIGNALED(st))
        zdtm_fail("waitpid of my child %d", child);
    printf("spawned %lu\n", n);
    zdtm_pass();
}
