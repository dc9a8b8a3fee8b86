/* fd_refused.c: holds an fd of a kind no restore exists for (a pidfd of
 * itself). A checkpoint must be refused naming it, and the program must
 * go on untouched.
 *
 *   fd_refused [children N]
 *
 * With "children N" it first forks N children that only wait for the end
 * (the refused checkpoint has then begun on other processes, and copy-on-
 * write snapshots of them may exist): at the end no process may have a
 * child it did not make, dead or alive. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

#define MAX_CHILDREN 16

/* Fails if this process has a child (none was made by it). */
static void no_child_left(const char *who)
{
	int st;
	pid_t p = waitpid(-1, &st, WNOHANG | __WALL);
	if (p != -1 || errno != ECHILD)
		zdtm_fail("%s: waitpid(-1) found a child it never made (%d, status %#x)", who, (int)p,
			  p > 0 ? st : 0);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    int n = 0;
    pid_t kids[MAX_CHILDREN];
    if (argc > 2 && strcmp(argv[1], "children") == 0)
        n = atoi(argv[2]);
    if (n < 0 || n > MAX_CHILDREN)
        zdtm_fail("bad number of children %s", argv[2]);
    for (int i = 0; i < n; i++) {
        kids[i] = fork();
        if (kids[i] < 0)
            zdtm_fail("fork: %s", strerror(errno));
        if (kids[i] == 0) {
            while (!zdtm_stop_requested())
                zdtm_msleep(50);
            no_child_left("a child");
            _exit(0);
        }
    }
    int pfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (pfd < 0)
        zdtm_fail("pidfd_open: %s", strerror(errno));
    zdtm_ready();
    while (!zdtm_stop_requested())
        zdtm_msleep(50);
    if (fcntl(pfd, F_GETFD) < 0)
        zdtm_fail("the pidfd is gone: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
        int st;
        pid_t p = waitpid(-1, &st, __WALL);
        int mine = 0;
        for (int k = 0; k < n; k++)
            mine |= p == kids[k];
        if (p < 0)
            zdtm_fail("waitpid: %s", strerror(errno));
        if (!mine)
            zdtm_fail("the parent: waitpid(-1) found a child it never made (%d, status %#x)",
                      (int)p, st);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            zdtm_fail("child %d ended with status %#x", (int)p, st);
    }
    no_child_left("the parent");
    zdtm_pass();
}
