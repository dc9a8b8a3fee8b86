/* churn.c: threads are created and exit all the time while checkpoints
 * happen; every created thread must be joined with its result, and the
 * totals must agree. */
#include <pthread.h>
#include <stdio.h>
#include "zdtm.h"

static long work(long n) {
    long s = 0;
    for (long i = 0; i < n; i++)
        s += i ^ (s >> 3);
    return s;
}

static void *thread(void *arg) {
    long n = (long)arg;
    (void)work(20000);
    return (void *)(n * 2 + 1);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    zdtm_ready();
    long created = 0, joined = 0;
    while (!zdtm_stop_requested()) {
        pthread_t t[8];
        for (long i = 0; i < 8; i++)
            if (pthread_create(&t[i], NULL, thread, (void *)(created + i)))
                zdtm_fail("pthread_create after %ld threads", created);
        for (long i = 0; i < 8; i++) {
            void *r;
            if (pthread_join(t[i], &r) || (long)r != (created + i) * 2 + 1)
                zdtm_fail("join %ld", created + i);
            joined++;
        }
        created += 8;
    }
    if (joined != created || created < 80)
        zdtm_fail("created %ld, joined %ld", created, joined);
    printf("threads: %ld\n", created);
    zdtm_pass();
}
