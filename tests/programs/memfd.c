/* memfd.c: memfds come back as memfds with their name, size, seals, offset
 * and contents; a MAP_SHARED mapping stays shared with the fd, and a
 * mapping whose fd was closed stays shared between parent and child; a
 * private mapping keeps its private copy and shows the memfd elsewhere.
 * Checked continuously while the program runs and at the end. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

#define BUF_SIZE (3 * 4096 + 123)
#define BUF_OFFSET 1234
#define BUF_SEALS (F_SEAL_SHRINK | F_SEAL_GROW)
#define SEALED_SEALS (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_SEAL)

static int buf_fd, sealed_fd;
static volatile long *map; /* shared mapping of buf_fd */

static void check_fd(int fd, const char *name, off_t size, int seals, off_t offset) {
    char link[64], want[128], got[256] = {0};
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    snprintf(want, sizeof want, "/memfd:%s (deleted)", name);
    if (readlink(link, got, sizeof got - 1) < 0 || strcmp(got, want) != 0)
        zdtm_fail("fd %d is '%s', expected '%s'", fd, got, want);
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size != size)
        zdtm_fail("%s: size %ld, expected %ld", name, (long)st.st_size, (long)size);
    int s = fcntl(fd, F_GET_SEALS);
    if (s != seals)
        zdtm_fail("%s: seals %#x, expected %#x", name, s, seals);
    if (lseek(fd, 0, SEEK_CUR) != offset)
        zdtm_fail("%s: offset %ld, expected %ld", name, (long)lseek(fd, 0, SEEK_CUR), (long)offset);
}

static void check_coherent(long i) {
    /* Through the mapping, seen by the fd ... */
    map[1] = i;
    long v = 0;
    if (pread(buf_fd, &v, sizeof v, sizeof(long)) != sizeof v || v != i)
        zdtm_fail("wrote %ld through the mapping, the fd reads %ld (mapping not shared?)", i, v);
    /* ... and through the fd, seen by the mapping. */
    v = -i;
    if (pwrite(buf_fd, &v, sizeof v, 2 * sizeof(long)) != sizeof v || map[2] != -i)
        zdtm_fail("wrote %ld through the fd, the mapping reads %ld", -i, map[2]);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    buf_fd = memfd_create("dmtcp-test-buf", MFD_ALLOW_SEALING);
    if (buf_fd < 0)
        zdtm_fail("memfd_create: %s", strerror(errno));
    if (ftruncate(buf_fd, BUF_SIZE) != 0)
        zdtm_fail("ftruncate: %s", strerror(errno));
    char pat[BUF_SIZE];
    for (int i = 0; i < BUF_SIZE; i++)
        pat[i] = (char)(i * 13 + 5);
    if (pwrite(buf_fd, pat, BUF_SIZE, 0) != BUF_SIZE)
        zdtm_fail("pwrite");
    map = mmap(NULL, BUF_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, buf_fd, 0);
    if (map == MAP_FAILED)
        zdtm_fail("mmap: %s", strerror(errno));
    if (fcntl(buf_fd, F_ADD_SEALS, BUF_SEALS) != 0)
        zdtm_fail("F_ADD_SEALS: %s", strerror(errno));
    lseek(buf_fd, BUF_OFFSET, SEEK_SET);
    /* A private mapping: one page modified (a private copy), one not. */
    char *priv = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, buf_fd, 0);
    if (priv == MAP_FAILED)
        zdtm_fail("mmap private: %s", strerror(errno));
    strcpy(priv + 4096, "private copy");

    sealed_fd = memfd_create("dmtcp-test-sealed", MFD_ALLOW_SEALING | MFD_CLOEXEC);
    if (sealed_fd < 0 || write(sealed_fd, "read-only contents", 19) != 19)
        zdtm_fail("sealed memfd: %s", strerror(errno));
    if (fcntl(sealed_fd, F_ADD_SEALS, SEALED_SEALS) != 0)
        zdtm_fail("F_ADD_SEALS sealed: %s", strerror(errno));

    /* A memfd only a mapping holds, shared with a child. */
    int t = memfd_create("dmtcp-test-maponly", 0);
    if (t < 0 || ftruncate(t, 8192) != 0)
        zdtm_fail("maponly memfd: %s", strerror(errno));
    volatile long *shared = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, t, 0);
    if (shared == MAP_FAILED)
        zdtm_fail("mmap maponly: %s", strerror(errno));
    close(t);
    shared[1000] = 4242;

    pid_t c = fork();
    if (c == 0) {
        prctl(PR_SET_NAME, "memfd-child");
        while (!shared[1]) {
            shared[0]++;
            zdtm_msleep(1);
        }
        exit(shared[1000] == 4242 ? 0 : 3);
    }
    zdtm_ready();
    long i = 0, last = -1, stalls = 0;
    while (!zdtm_stop_requested()) {
        check_coherent(++i);
        if (i % 50 == 0) {
            check_fd(buf_fd, "dmtcp-test-buf", BUF_SIZE, BUF_SEALS, BUF_OFFSET);
            check_fd(sealed_fd, "dmtcp-test-sealed", 19, SEALED_SEALS, 19);
        }
        long now = shared[0];
        stalls = now == last ? stalls + 1 : 0;
        last = now;
        if (stalls > 20000)
            zdtm_fail("the child's counter stopped at %ld (maponly memfd not shared?)", now);
        zdtm_msleep(1);
    }
    shared[1] = 1;
    int st;
    if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child failed (%#x)", st);
    check_fd(buf_fd, "dmtcp-test-buf", BUF_SIZE, BUF_SEALS, BUF_OFFSET);
    check_fd(sealed_fd, "dmtcp-test-sealed", 19, SEALED_SEALS, 19);
    char got[BUF_SIZE];
    if (pread(buf_fd, got, BUF_SIZE, 0) != BUF_SIZE)
        zdtm_fail("pread");
    for (int k = 3 * sizeof(long); k < BUF_SIZE; k++)
        if (got[k] != pat[k])
            zdtm_fail("memfd byte %d changed", k);
    if (strcmp(priv + 4096, "private copy") != 0)
        zdtm_fail("the private copy in the private mapping is lost");
    if (memcmp(got + 4096, pat + 4096, 16) != 0)
        zdtm_fail("the private copy leaked into the memfd");
    if (memcmp(priv + 8192, pat + 8192, 4096) != 0)
        zdtm_fail("the private mapping does not show the memfd's bytes");
    char s[32] = {0};
    if (pread(sealed_fd, s, sizeof s, 0) != 19 || strcmp(s, "read-only contents") != 0)
        zdtm_fail("sealed memfd contents '%s'", s);
    if (write(sealed_fd, "x", 1) >= 0 || errno != EPERM)
        zdtm_fail("sealed memfd accepts writes");
    printf("iterations %ld child %ld\n", i, shared[0]);
    zdtm_pass();
}
