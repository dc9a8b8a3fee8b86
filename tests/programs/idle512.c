/* idle512.c: 512 threads blocked (condvar, nanosleep, read on a pipe) across
 * checkpoints; after the last restart every one is woken and joined. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
#include "zdtm.h"

#define N 512
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static int done, started;
static int pipefd[2];

static void *worker(void *arg) {
    long i = (long)arg;
    pthread_mutex_lock(&m);
    started++;
    pthread_cond_broadcast(&c);
    pthread_mutex_unlock(&m);
    if (i % 3 == 0) {
        pthread_mutex_lock(&m);
        while (!done)
            pthread_cond_wait(&c, &m);
        pthread_mutex_unlock(&m);
    } else if (i % 3 == 1) {
        while (!__atomic_load_n(&done, __ATOMIC_SEQ_CST)) {
            struct timespec ts = {0, 100 * 1000 * 1000};
            if (nanosleep(&ts, NULL) && errno == EINTR)
                return (void *)-1;
        }
    } else {
        char b;
        ssize_t n = read(pipefd[0], &b, 1);
        if (n != 1)
            return (void *)-2;
    }
    return (void *)i;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    if (pipe(pipefd))
        zdtm_fail("pipe");
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setstacksize(&a, 64 * 1024);
    pthread_t t[N];
    for (long i = 0; i < N; i++)
        if (pthread_create(&t[i], &a, worker, (void *)i))
            zdtm_fail("pthread_create %ld", i);
    pthread_mutex_lock(&m);
    while (started < N)
        pthread_cond_wait(&c, &m);
    pthread_mutex_unlock(&m);
    zdtm_ready();
    while (!zdtm_stop_requested())
        zdtm_msleep(50);
    pthread_mutex_lock(&m);
    __atomic_store_n(&done, 1, __ATOMIC_SEQ_CST);
    pthread_cond_broadcast(&c);
    pthread_mutex_unlock(&m);
    for (long i = 2; i < N; i += 3)
        if (write(pipefd[1], "x", 1) != 1)
            zdtm_fail("write");
    for (long i = 0; i < N; i++) {
        void *ret;
        if (pthread_join(t[i], &ret))
            zdtm_fail("join %ld", i);
        if ((long)ret != i)
            zdtm_fail("thread %ld returned %ld", i, (long)ret);
    }
    zdtm_pass();
}
