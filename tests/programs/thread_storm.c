/* thread_storm.c: a stress for checkpoints of processes whose threads come
 * and go all the time (DMTCP's pthread5/pthread6 flakes): 4 spawner threads
 * each create detached threads that exit at once, and signal each other
 * with pthread_kill (thread-directed signals in flight). Every spawned
 * thread is counted in and out; the totals must agree at the end. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include "zdtm.h"

#define SPAWNERS 4
static atomic_long started, finished, signals;
static pthread_t spawners[SPAWNERS];
static atomic_int stop, go;

static void on_usr1(int s) {
    (void)s;
    atomic_fetch_add(&signals, 1);
}

static void *short_lived(void *a) {
    (void)a;
    atomic_fetch_add(&finished, 1);
    return NULL;
}

static void *spawner(void *a) {
    long me = (long)a;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    long n = 0;
    while (!atomic_load(&go))
        zdtm_msleep(1);
    while (!atomic_load(&stop)) {
        pthread_t t;
        atomic_fetch_add(&started, 1);
        if (pthread_create(&t, &attr, short_lived, NULL) != 0) {
            atomic_fetch_sub(&started, 1);
            zdtm_msleep(1);
            continue;
        }
        if (++n % 16 == 0)
            pthread_kill(spawners[(me + 1) % SPAWNERS], SIGUSR1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    for (long i = 0; i < SPAWNERS; i++)
        pthread_create(&spawners[i], NULL, spawner, (void *)i);
    atomic_store(&go, 1);
    zdtm_ready();
    while (!zdtm_stop_requested())
        zdtm_msleep(20);
    atomic_store(&stop, 1);
    for (int i = 0; i < SPAWNERS; i++)
        pthread_join(spawners[i], NULL);
    /* Detached threads may still be finishing. */
    for (int i = 0; i < 500 && atomic_load(&finished) != atomic_load(&started); i++)
        zdtm_msleep(10);
    long s = atomic_load(&started), f = atomic_load(&finished);
    if (s != f || s < 100)
        zdtm_fail("threads started %ld, finished %ld", s, f);
    printf("threads %ld signals %ld\n", s, atomic_load(&signals));
    zdtm_pass();
}
