/* noreserve.c: a 2 TiB MAP_NORESERVE mapping with 5 touched pages (DMTCP's
 * mmap-noreserve): it restores (with MAP_NORESERVE: VM_NORESERVE kept, no
 * VM_ACCOUNT, as /proc/self/smaps shows), its 5 pages keep their bytes and
 * the rest reads as zero. Checked continuously and at the end. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "zdtm.h"

#define SIZE (2ULL << 40)
static const unsigned long long offs[5] = {
    0, 4096 * 3, 1ULL << 30, 1ULL << 40, SIZE - 4096,
};

/* The VmFlags line of the mapping at addr in /proc/self/smaps. */
static void vmflags(unsigned long addr, char *out, size_t n) {
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0;
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, ' ') == line + strcspn(line, " "))
            in = s == addr;
        if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out, n, "%s", line + 8);
            break;
        }
    }
    if (f)
        fclose(f);
}

static int has_flag(const char *flags, const char *f) {
    char pad[600];
    snprintf(pad, sizeof pad, " %s", flags);
    char want[8];
    snprintf(want, sizeof want, " %s", f);
    char *p = strstr(pad, want);
    return p && (p[strlen(want)] == ' ' || p[strlen(want)] == '\n' || !p[strlen(want)]);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    char *m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED)
        zdtm_fail("mmap 2 TiB MAP_NORESERVE: %s", strerror(errno));
    for (int i = 0; i < 5; i++)
        snprintf(m + offs[i], 64, "page %d at %llx", i, offs[i]);
    char flags[512];
    vmflags((unsigned long)m, flags, sizeof flags);
    if (!has_flag(flags, "nr") || has_flag(flags, "ac"))
        zdtm_fail("before: VmFlags%s", flags);
    zdtm_ready();
    volatile long *counter = (volatile long *)(m + 2048);
    long i = 0;
    while (!zdtm_stop_requested()) {
        *counter = ++i;
        if (i % 100 == 0) {
            for (int k = 0; k < 5; k++) {
                char want[64];
                snprintf(want, sizeof want, "page %d at %llx", k, offs[k]);
                if (strcmp(m + offs[k], want) != 0)
                    zdtm_fail("page %d reads '%.40s'", k, m + offs[k]);
            }
        }
        zdtm_msleep(2);
    }
    vmflags((unsigned long)m, flags, sizeof flags);
    if (!has_flag(flags, "nr") || has_flag(flags, "ac"))
        zdtm_fail("after: VmFlags%s (MAP_NORESERVE lost?)", flags);
    if (*counter != i)
        zdtm_fail("counter %ld, expected %ld", *counter, i);
    /* Untouched pages read as zero (a few samples). */
    for (unsigned long long o = 8192; o < SIZE; o += SIZE / 7 + 4096)
        if (m[o] != 0)
            zdtm_fail("byte at %llx is %d, expected 0", o, m[o]);
    printf("iterations %ld\n", i);
    zdtm_pass();
}
