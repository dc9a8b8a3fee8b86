/* raise_sync.c: a signal a thread sends to itself is handled before the
 * call that sent it returns, also when a checkpoint stops the thread right
 * at that moment (the thread is then in its signal-delivery stop, and the
 * checkpoint must hand the signal back before the thread runs on).
 * Three threads (main and two more) each send SIGUSR1 to themselves with a
 * raw tgkill in a tight loop and check after every call that their handler
 * ran exactly once more. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "zdtm.h"

#define THREADS 3
static __thread volatile sig_atomic_t handled;
static atomic_int stop;
static atomic_long raised;

static void on_usr1(int s) {
    (void)s;
    handled++;
}

/* One raw tgkill of SIGUSR1 to the calling thread; its handler must have
 * run before the call returned. */
static void raise_once(const char *who, long n) {
    /* The tgid and tid are asked every time: a restart may change the
     * kernel's, and the library's wrappers answer with virtual ones. */
    long pid = getpid(), tid = gettid();
    sig_atomic_t before = handled;
    long r = syscall(SYS_tgkill, pid, tid, SIGUSR1);
    if (r != 0 || handled != before + 1)
        zdtm_fail("%s: tgkill(%ld, %ld, SIGUSR1) after %ld calls: %ld, handler ran %d times", who,
                  pid, tid, n, r, (int)(handled - before));
}

static void *raiser(void *a) {
    (void)a;
    long n = 0;
    while (!atomic_load(&stop))
        raise_once("thread", n++);
    atomic_fetch_add(&raised, n);
    return NULL;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t th[THREADS - 1];
    for (int i = 0; i < THREADS - 1; i++)
        if (pthread_create(&th[i], NULL, raiser, NULL))
            zdtm_fail("pthread_create");
    zdtm_ready();
    /* The main thread raises too, between looks at the stop request. */
    long n = 0;
    while (!zdtm_stop_requested()) {
        for (int i = 0; i < 1000; i++)
            raise_once("main", n++);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS - 1; i++)
        pthread_join(th[i], NULL);
    printf("raised %ld\n", atomic_load(&raised) + n);
    zdtm_pass();
}
