/* past_eof: private mappings of a file that reach past its end, as the
 * dynamic loader makes for a library whose text and data are mapped as one
 * span (the pages past the end of the file cannot be read: SIGBUS). A
 * 20 KiB file is mapped over 4 MiB twice: read-only, with a PROT_NONE gap
 * in the middle (the loader's way), and read-write with one page modified
 * in memory (copy-on-write). Checked every iteration and at stop: the
 * file's bytes through both mappings, the modified page, and that a page
 * past the end still raises SIGBUS. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FILE_BYTES 20480L
#define SPAN (4L << 20)

static sigjmp_buf jmp;
static void on_bus(int s) {
    (void)s;
    siglongjmp(jmp, 1);
}

static unsigned char byte_at(long off) { return (unsigned char)(off * 7 + 3); }

static unsigned char *ro, *rw;

static void check(void) {
    for (long off = 0; off < FILE_BYTES; off += 511) {
        if (ro[off] != byte_at(off))
            zdtm_fail("read-only mapping: byte %ld is %d, want %d", off, ro[off], byte_at(off));
        unsigned char want = off < 4096 ? (unsigned char)(off ^ 0x5a) : byte_at(off);
        if (rw[off] != want)
            zdtm_fail("read-write mapping: byte %ld is %d, want %d", off, rw[off], want);
    }
    volatile unsigned char c = 0;
    if (sigsetjmp(jmp, 1) == 0) {
        c = ro[SPAN - 4096];
        zdtm_fail("a page past the end of the file was readable (%d)", c);
    }
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    char path[] = "past_eof.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        zdtm_fail("mkstemp: %m");
    unsigned char buf[FILE_BYTES];
    for (long i = 0; i < FILE_BYTES; i++)
        buf[i] = byte_at(i);
    if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf)
        zdtm_fail("write: %m");
    ro = mmap(NULL, SPAN, PROT_READ, MAP_PRIVATE, fd, 0);
    rw = mmap(NULL, SPAN, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (ro == MAP_FAILED || rw == MAP_FAILED)
        zdtm_fail("mmap: %m");
    if (mprotect(ro + 6 * 4096, 1L << 20, PROT_NONE))
        zdtm_fail("mprotect: %m");
    close(fd);
    for (long off = 0; off < 4096; off++)
        rw[off] = (unsigned char)(off ^ 0x5a);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_bus;
    sigaction(SIGBUS, &sa, NULL);
    check();
    zdtm_ready();
    while (!zdtm_stop_requested()) {
        check();
        zdtm_msleep(20);
    }
    check();
    unlink(path);
    zdtm_pass();
}
