/* threads.c: 8 threads take turns under one mutex and condvar.
 * Checks after every restart: each thread's tid and TLS value unchanged,
 * the shared counter equals the sum of the per-thread counts (no lost or
 * doubled wake-up), and every thread can still be joined. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/syscall.h>
#include "zdtm.h"

#define N 8
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static long turn, shared_count, counts[N];
static int done;
static __thread long tls_value;
static volatile int bad;
static char why[256];

static void *worker(void *arg) {
    long i = (long)arg;
    tls_value = 1000 + i;
    pid_t tid = (pid_t)syscall(SYS_gettid);
    for (;;) {
        pthread_mutex_lock(&m);
        while (!done && turn % N != i)
            pthread_cond_wait(&c, &m);
        if (done) {
            pthread_mutex_unlock(&m);
            break;
        }
        turn++;
        shared_count++;
        counts[i]++;
        pthread_cond_broadcast(&c);
        pthread_mutex_unlock(&m);
        if ((pid_t)syscall(SYS_gettid) != tid || tls_value != 1000 + i) {
            snprintf(why, sizeof why, "thread %ld: tid %d->%ld tls %ld", i, tid,
                     (long)syscall(SYS_gettid), tls_value);
            bad = 1;
        }
        if (counts[i] % 64 == 0)
            zdtm_msleep(1);
    }
    return (void *)(1000 + i);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    pthread_t t[N];
    for (long i = 0; i < N; i++)
        if (pthread_create(&t[i], NULL, worker, (void *)i))
            zdtm_fail("pthread_create");
    zdtm_ready();
    while (!zdtm_stop_requested())
        zdtm_msleep(50);
    pthread_mutex_lock(&m);
    done = 1;
    pthread_cond_broadcast(&c);
    pthread_mutex_unlock(&m);
    long sum = 0;
    for (long i = 0; i < N; i++) {
        void *ret;
        if (pthread_join(t[i], &ret))
            zdtm_fail("pthread_join %ld", i);
        if ((long)ret != 1000 + i)
            zdtm_fail("thread %ld returned %ld", i, (long)ret);
        sum += counts[i];
    }
    if (bad)
        zdtm_fail("%s", why);
    if (sum != shared_count || shared_count != turn)
        zdtm_fail("counts %ld, shared %ld, turn %ld", sum, shared_count, turn);
    if (shared_count < 100)
        zdtm_fail("too little progress: %ld", shared_count);
    printf("turns: %ld\n", turn);
    zdtm_pass();
}
