/* timer_thread.c: a POSIX timer with SIGEV_THREAD (DMTCP's timer2): glibc
 * runs the callback on a helper thread that the kernel timer signals
 * (SIGEV_THREAD_ID, glibc's internal signal 32). The callback keeps running
 * every 10 ms after restarts, and the process is not killed by signal 32.
 * A SIGEV_THREAD_ID timer to a worker (which alone does not block its
 * signal) checks that the target thread is kept. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include "zdtm.h"

static atomic_long ticks, wticks, wrong;
static volatile pid_t worker_tid;

static void tick(union sigval v) {
    if (v.sival_int != 7)
        atomic_fetch_add(&wrong, 1);
    atomic_fetch_add(&ticks, 1);
}

static void on_w(int s) {
    (void)s;
    if (syscall(SYS_gettid) != worker_tid)
        atomic_fetch_add(&wrong, 1);
    atomic_fetch_add(&wticks, 1);
}

static void *worker(void *a) {
    (void)a;
    worker_tid = syscall(SYS_gettid);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGRTMIN + 2);
    pthread_sigmask(SIG_UNBLOCK, &s, NULL);
    for (;;)
        pause();
    return NULL;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    /* Only the worker takes SIGRTMIN+2. */
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGRTMIN + 2);
    pthread_sigmask(SIG_BLOCK, &s, NULL);
    signal(SIGRTMIN + 2, on_w);
    pthread_t w;
    pthread_create(&w, NULL, worker, NULL);
    while (!worker_tid)
        zdtm_msleep(1);

    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD;
    ev.sigev_notify_function = tick;
    ev.sigev_value.sival_int = 7;
    timer_t t;
    if (timer_create(CLOCK_MONOTONIC, &ev, &t) != 0)
        zdtm_fail("timer_create SIGEV_THREAD");
    struct itimerspec its = {{0, 10000000}, {0, 10000000}};
    timer_settime(t, 0, &its, NULL);

    struct sigevent ew;
    memset(&ew, 0, sizeof ew);
    ew.sigev_notify = SIGEV_THREAD_ID;
    ew.sigev_signo = SIGRTMIN + 2;
    ew._sigev_un._tid = worker_tid;
    timer_t tw;
    if (timer_create(CLOCK_MONOTONIC, &ew, &tw) != 0)
        zdtm_fail("timer_create SIGEV_THREAD_ID");
    struct itimerspec itw = {{0, 15000000}, {0, 15000000}};
    timer_settime(tw, 0, &itw, NULL);

    zdtm_ready();
    long last = -1, wlast = -1, stalls = 0;
    while (!zdtm_stop_requested()) {
        zdtm_msleep(50);
        long n = atomic_load(&ticks), m = atomic_load(&wticks);
        stalls = (n == last || m == wlast) ? stalls + 1 : 0;
        if (stalls > 100)
            zdtm_fail("timers stopped: callback %ld, worker %ld", n, m);
        last = n;
        wlast = m;
    }
    long n0 = atomic_load(&ticks), m0 = atomic_load(&wticks);
    zdtm_msleep(200);
    if (atomic_load(&ticks) <= n0 || atomic_load(&wticks) <= m0)
        zdtm_fail("timers do not fire at the end");
    if (atomic_load(&wrong))
        zdtm_fail("%ld wrong deliveries", atomic_load(&wrong));
    printf("callback %ld worker %ld\n", atomic_load(&ticks), atomic_load(&wticks));
    zdtm_pass();
}
