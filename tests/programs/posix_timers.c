/* posix_timers.c: POSIX timers keep their ids and keep firing.
 *   A: CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN, si_value 42, every 20 ms
 *   B: SIGEV_THREAD_ID to a worker thread, SIGRTMIN+1, every 30 ms
 *   C: SIGEV_NONE, one shot in 1000 s (remaining time must survive) */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "zdtm.h"

static timer_t ta, tb, tc;
static volatile long a_ticks, b_ticks, bad;
static volatile pid_t worker_tid;

static void on_a(int s, siginfo_t *si, void *u) {
    (void)s; (void)u;
    if (si->si_value.sival_int != 42 || si->si_code != SI_TIMER)
        bad = 1;
    a_ticks++;
}
static void on_b(int s, siginfo_t *si, void *u) {
    (void)s; (void)si; (void)u;
    if (syscall(SYS_gettid) != worker_tid)
        bad = 2;
    b_ticks++;
}
static void *worker(void *x) {
    (void)x;
    worker_tid = (pid_t)syscall(SYS_gettid);
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sa.sa_sigaction = on_a;
    sigaction(SIGRTMIN, &sa, NULL);
    sa.sa_sigaction = on_b;
    sigaction(SIGRTMIN + 1, &sa, NULL);
    /* Only the worker takes SIGRTMIN+1. */
    sigset_t m;
    sigemptyset(&m);
    sigaddset(&m, SIGRTMIN + 1);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_sigmask(SIG_BLOCK, &m, NULL);
    while (!worker_tid)
        zdtm_msleep(1);

    struct sigevent se;
    memset(&se, 0, sizeof se);
    se.sigev_notify = SIGEV_SIGNAL;
    se.sigev_signo = SIGRTMIN;
    se.sigev_value.sival_int = 42;
    if (timer_create(CLOCK_MONOTONIC, &se, &ta))
        zdtm_fail("timer A");
    se.sigev_notify = SIGEV_THREAD_ID;
    se.sigev_signo = SIGRTMIN + 1;
    se._sigev_un._tid = worker_tid;
    if (timer_create(CLOCK_MONOTONIC, &se, &tb))
        zdtm_fail("timer B");
    se.sigev_notify = SIGEV_NONE;
    if (timer_create(CLOCK_REALTIME, &se, &tc))
        zdtm_fail("timer C");
    struct itimerspec a = {{0, 20000000}, {0, 20000000}}, b = {{0, 30000000}, {0, 30000000}},
                      c = {{0, 0}, {1000, 0}};
    timer_settime(ta, 0, &a, NULL);
    timer_settime(tb, 0, &b, NULL);
    timer_settime(tc, 0, &c, NULL);
    zdtm_ready();
    while (!zdtm_stop_requested())
        zdtm_msleep(50);
    long a0 = a_ticks, b0 = b_ticks;
    zdtm_msleep(300);
    if (bad)
        zdtm_fail("wrong signal info (%ld)", (long)bad);
    if (a_ticks <= a0 || b_ticks <= b0)
        zdtm_fail("timers stopped: A %ld->%ld, B %ld->%ld", a0, a_ticks, b0, b_ticks);
    struct itimerspec cur;
    if (timer_gettime(tc, &cur) || cur.it_value.tv_sec < 900)
        zdtm_fail("timer C lost its remaining time (%ld s)", (long)cur.it_value.tv_sec);
    if (timer_gettime(ta, &cur) || cur.it_interval.tv_nsec != 20000000)
        zdtm_fail("timer A changed");
    printf("ticks: A %ld, B %ld\n", a_ticks, b_ticks);
    zdtm_pass();
}
