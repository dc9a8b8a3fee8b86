/* shmem.c: shared anonymous memory between parent and child survives, and
 * stays SHARED: both add to one atomic counter and their own counters in a
 * MAP_SHARED|MAP_ANONYMOUS region; each must see the other's counter move
 * after every restart, and at the end total == parent + child. */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

struct shared {
    atomic_long total;
    atomic_long mine[2];
    atomic_int stop;
    char pattern[8192];
};

static void work(struct shared *s, int me, const char *who) {
    long other_seen = atomic_load(&s->mine[!me]), stalls = 0;
    while (!atomic_load(&s->stop)) {
        atomic_fetch_add(&s->total, 1);
        atomic_fetch_add(&s->mine[me], 1);
        if (atomic_load(&s->mine[me]) % 100 == 0) {
            long o = atomic_load(&s->mine[!me]);
            stalls = o == other_seen ? stalls + 1 : 0;
            other_seen = o;
            if (stalls > 200)
                zdtm_fail("%s: the other side's counter stopped at %ld (sharing lost?)", who, o);
            zdtm_msleep(2);
        }
        if (me == 0 && zdtm_stop_requested())
            atomic_store(&s->stop, 1);
    }
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED)
        zdtm_fail("mmap");
    for (size_t i = 0; i < sizeof s->pattern; i++)
        s->pattern[i] = (char)(i * 7);
    pid_t c = fork();
    if (c == 0) {
        prctl(PR_SET_NAME, "shmem-child");
        work(s, 1, "child");
        exit(0);
    }
    zdtm_ready();
    work(s, 0, "parent");
    int st;
    if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child failed (%#x)", st);
    for (size_t i = 0; i < sizeof s->pattern; i++)
        if (s->pattern[i] != (char)(i * 7))
            zdtm_fail("pattern byte %zu changed", i);
    long t = atomic_load(&s->total), a = atomic_load(&s->mine[0]), b = atomic_load(&s->mine[1]);
    if (t != a + b || a == 0 || b == 0)
        zdtm_fail("total %ld != parent %ld + child %ld", t, a, b);
    printf("total %ld\n", t);
    zdtm_pass();
}
