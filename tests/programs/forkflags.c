/* forkflags.c: a MADV_DONTFORK and a MADV_WIPEONFORK mapping with known
 * contents. The copy-on-write snapshot child a checkpoint forks has no
 * copy of the first and an empty copy of the second, so both must be read
 * while the program is frozen (issue 20): every page of both holds the
 * generation the program last wrote, checked continuously and at the end.
 * With FORKFLAGS=wipe only the MADV_WIPEONFORK one (a process with a
 * MADV_DONTFORK mapping has its VM flags read while frozen; without, they
 * come from the snapshot child and the wiped mapping is found by its
 * pages). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "zdtm.h"

#define PAGES 64
#define PAGE 4096

static char *map_with(int advice, const char *what) {
    char *m = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        zdtm_fail("mmap %s: %s", what, strerror(errno));
    if (madvise(m, PAGES * PAGE, advice) != 0)
        zdtm_fail("madvise %s: %s", what, strerror(errno));
    return m;
}

static void fill(char *m, long gen) {
    for (int k = 0; k < PAGES; k++)
        snprintf(m + k * PAGE, 64, "page %d generation %ld", k, gen);
}

static void check(const char *what, char *m, long gen) {
    for (int k = 0; k < PAGES; k++) {
        char want[64];
        snprintf(want, sizeof want, "page %d generation %ld", k, gen);
        if (strcmp(m + k * PAGE, want) != 0)
            zdtm_fail("%s page %d reads '%.40s', expected '%s'", what, k, m + k * PAGE, want);
    }
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    const char *only = getenv("FORKFLAGS");
    int wipe_only = only && strcmp(only, "wipe") == 0;
    /* The other mapping stands in for the MADV_DONTFORK one with wipe. */
    char *dontfork = wipe_only ? map_with(MADV_NORMAL, "MADV_NORMAL")
                               : map_with(MADV_DONTFORK, "MADV_DONTFORK");
    char *wipe = map_with(MADV_WIPEONFORK, "MADV_WIPEONFORK");
    long gen = 1;
    fill(dontfork, gen);
    fill(wipe, gen);
    zdtm_ready();
    while (!zdtm_stop_requested()) {
        check("MADV_DONTFORK", dontfork, gen);
        check("MADV_WIPEONFORK", wipe, gen);
        gen++;
        fill(dontfork, gen);
        fill(wipe, gen);
        zdtm_msleep(2);
    }
    check("MADV_DONTFORK", dontfork, gen);
    check("MADV_WIPEONFORK", wipe, gen);
    printf("generations %ld\n", gen);
    zdtm_pass();
}
