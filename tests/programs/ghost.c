/* ghost.c: files unlinked while open or mapped (CRIU's ghost files) and an
 * unlinked POSIX message queue come back unlinked, with their contents,
 * size, mode and offsets:
 *   - A: open, unlinked, mapped MAP_SHARED; the fd and the mapping stay
 *     coherent, and a child mapping it shares it (a counter it bumps);
 *   - B: mapped MAP_SHARED, fd closed, then unlinked (DMTCP's
 *     shared-memory1): only mappings hold it, shared with the child;
 *   - C: mapped MAP_PRIVATE with one page privately modified, fd closed,
 *     unlinked;
 *   - D: write-only O_APPEND fd on an unlinked file, mode 0640;
 *   - Q: a POSIX message queue with two messages, unlinked.
 * Checked continuously while the program runs and at the end. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

#define A_SIZE (3 * 4096 + 123)
#define A_OFFSET 1234
#define B_SIZE (4 * 4096)
#define C_SIZE (3 * 4096)

static char pat(int i) { return (char)(i * 13 + 5); }

static int make_file(const char *name, int size, int flags, mode_t mode) {
    int fd = open(name, O_CREAT | O_EXCL | O_RDWR, mode);
    if (fd < 0)
        zdtm_fail("create %s: %s", name, strerror(errno));
    char *buf = malloc(size);
    for (int i = 0; i < size; i++)
        buf[i] = pat(i);
    if (write(fd, buf, size) != size)
        zdtm_fail("write %s", name);
    free(buf);
    if (flags != O_RDWR) {
        int again = open(name, flags);
        if (again < 0)
            zdtm_fail("reopen %s: %s", name, strerror(errno));
        close(fd);
        fd = again;
    }
    return fd;
}

static void check_unlinked(int fd, const char *name, off_t size, mode_t mode, off_t offset) {
    char link[64], got[512] = {0};
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    if (readlink(link, got, sizeof got - 1) < 0 || !strstr(got, " (deleted)"))
        zdtm_fail("%s: fd %d is '%s', expected an unlinked file", name, fd, got);
    struct stat st;
    if (fstat(fd, &st) != 0)
        zdtm_fail("%s: fstat: %s", name, strerror(errno));
    if (!S_ISREG(st.st_mode) || st.st_nlink != 0)
        zdtm_fail("%s: mode %o nlink %ld, expected an unlinked regular file", name,
                  st.st_mode, (long)st.st_nlink);
    if (st.st_size != size)
        zdtm_fail("%s: size %ld, expected %ld", name, (long)st.st_size, (long)size);
    if ((st.st_mode & 07777) != mode)
        zdtm_fail("%s: mode %o, expected %o", name, st.st_mode & 07777, mode);
    if (lseek(fd, 0, SEEK_CUR) != offset)
        zdtm_fail("%s: offset %ld, expected %ld", name, (long)lseek(fd, 0, SEEK_CUR),
                  (long)offset);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    umask(022);
    char a_name[64], b_name[64], c_name[64], d_name[64], q_name[64];
    snprintf(a_name, sizeof a_name, "ghost-a.%d", getpid());
    snprintf(b_name, sizeof b_name, "ghost-b.%d", getpid());
    snprintf(c_name, sizeof c_name, "ghost-c.%d", getpid());
    snprintf(d_name, sizeof d_name, "ghost-d.%d", getpid());
    snprintf(q_name, sizeof q_name, "/ghost-q.%d", getpid());

    int a = make_file(a_name, A_SIZE, O_RDWR, 0600);
    volatile long *amap = mmap(NULL, A_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0);
    if (amap == MAP_FAILED)
        zdtm_fail("mmap A: %s", strerror(errno));
    unlink(a_name);
    lseek(a, A_OFFSET, SEEK_SET);

    int b = make_file(b_name, B_SIZE, O_RDWR, 0600);
    volatile long *bmap = mmap(NULL, B_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, b, 0);
    if (bmap == MAP_FAILED)
        zdtm_fail("mmap B: %s", strerror(errno));
    close(b);
    unlink(b_name);
    bmap[0] = 0; /* the child's counter */
    bmap[1] = 0; /* stop flag */

    int c = make_file(c_name, C_SIZE, O_RDWR, 0600);
    char *cmap = mmap(NULL, C_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, c, 0);
    if (cmap == MAP_FAILED)
        zdtm_fail("mmap C: %s", strerror(errno));
    close(c);
    unlink(c_name);
    strcpy(cmap + 4096, "private copy");

    int d = make_file(d_name, 100, O_WRONLY | O_APPEND, 0640);
    unlink(d_name);
    if (write(d, "appended", 8) != 8)
        zdtm_fail("append to D");

    struct mq_attr qa = {.mq_maxmsg = 4, .mq_msgsize = 32};
    mqd_t q = mq_open(q_name, O_CREAT | O_EXCL | O_RDWR, 0600, &qa);
    if (q == (mqd_t)-1)
        zdtm_fail("mq_open: %s", strerror(errno));
    if (mq_send(q, "first", 6, 1) != 0 || mq_send(q, "second", 7, 5) != 0)
        zdtm_fail("mq_send: %s", strerror(errno));
    mq_unlink(q_name);

    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_NAME, "ghost-child");
        long n = 0;
        while (!bmap[1]) {
            bmap[0]++;
            /* A is shared with the parent too: it reads what we write. */
            amap[3] = ++n;
            zdtm_msleep(1);
        }
        exit(0);
    }
    zdtm_ready();
    long i = 0, last = -1, stalls = 0, alast = -1, astalls = 0;
    while (!zdtm_stop_requested()) {
        ++i;
        /* A: through the mapping, seen by the fd, and back. */
        amap[1] = i;
        long v = 0;
        if (pread(a, &v, sizeof v, sizeof(long)) != sizeof v || v != i)
            zdtm_fail("A: wrote %ld through the mapping, the fd reads %ld", i, v);
        v = -i;
        if (pwrite(a, &v, sizeof v, 2 * sizeof(long)) != sizeof v || amap[2] != -i)
            zdtm_fail("A: wrote %ld through the fd, the mapping reads %ld", -i, amap[2]);
        if (i % 50 == 0) {
            check_unlinked(a, "A", A_SIZE, 0600, A_OFFSET);
            check_unlinked(d, "D", 108, 0640, 108);
        }
        long now = bmap[0];
        stalls = now == last ? stalls + 1 : 0;
        last = now;
        long anow = amap[3];
        astalls = anow == alast ? astalls + 1 : 0;
        alast = anow;
        if (stalls > 20000)
            zdtm_fail("the child's counter in B stopped at %ld (B not shared?)", now);
        if (astalls > 20000)
            zdtm_fail("the child's counter in A stopped at %ld (A not shared?)", anow);
        zdtm_msleep(1);
    }
    bmap[1] = 1;
    int st;
    if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child failed (%#x)", st);
    check_unlinked(a, "A", A_SIZE, 0600, A_OFFSET);
    check_unlinked(d, "D", 108, 0640, 108);
    char got[A_SIZE];
    if (pread(a, got, A_SIZE, 0) != A_SIZE)
        zdtm_fail("pread A");
    for (int k = 4 * sizeof(long); k < A_SIZE; k++)
        if (got[k] != pat(k))
            zdtm_fail("A: byte %d changed", k);
    for (int k = 2 * sizeof(long); k < B_SIZE; k++)
        if (((volatile char *)bmap)[k] != pat(k))
            zdtm_fail("B: byte %d changed", k);
    if (strcmp(cmap + 4096, "private copy") != 0)
        zdtm_fail("C: the private copy is lost");
    for (int k = 0; k < C_SIZE; k++)
        if ((k < 4096 || k >= 8192) && cmap[k] != pat(k))
            zdtm_fail("C: byte %d changed", k);
    /* D's contents through a description of our own. */
    char link[64], dgot[108];
    snprintf(link, sizeof link, "/proc/self/fd/%d", d);
    int dr = open(link, O_RDONLY);
    if (dr < 0 || pread(dr, dgot, 108, 0) != 108)
        zdtm_fail("D: reading it back: %s", strerror(errno));
    for (int k = 0; k < 100; k++)
        if (dgot[k] != pat(k))
            zdtm_fail("D: byte %d changed", k);
    if (memcmp(dgot + 100, "appended", 8) != 0)
        zdtm_fail("D: the appended bytes are lost");
    /* Q: still unlinked, with both messages in priority order. */
    if (mq_open(q_name, O_RDONLY) != (mqd_t)-1 || errno != ENOENT)
        zdtm_fail("Q: the queue has a name again");
    struct mq_attr now_attr;
    if (mq_getattr(q, &now_attr) != 0 || now_attr.mq_curmsgs != 2 || now_attr.mq_maxmsg != 4)
        zdtm_fail("Q: %ld messages (max %ld), expected 2 (max 4)", (long)now_attr.mq_curmsgs,
                  (long)now_attr.mq_maxmsg);
    char m[32];
    unsigned prio;
    if (mq_receive(q, m, sizeof m, &prio) != 7 || prio != 5 || strcmp(m, "second") != 0)
        zdtm_fail("Q: first message '%s' prio %u", m, prio);
    if (mq_receive(q, m, sizeof m, &prio) != 6 || prio != 1 || strcmp(m, "first") != 0)
        zdtm_fail("Q: second message '%s' prio %u", m, prio);
    printf("iterations %ld child %ld\n", i, bmap[0]);
    zdtm_pass();
}
