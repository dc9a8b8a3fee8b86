/* fd_refused.c: holds an fd of a kind no restore exists for (a pidfd of
 * itself). A checkpoint must be refused naming it, and the program must
 * go on untouched. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "zdtm.h"

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    int pfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (pfd < 0)
        zdtm_fail("pidfd_open: %s", strerror(errno));
    zdtm_ready();
    while (!zdtm_stop_requested())
        zdtm_msleep(50);
    if (fcntl(pfd, F_GETFD) < 0)
        zdtm_fail("the pidfd is gone: %s", strerror(errno));
    zdtm_pass();
}
