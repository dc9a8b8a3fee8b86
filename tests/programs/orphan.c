/* orphan: the launched process forks a child and exits 0 at once, as a
 * program that daemonizes or a shell running `child & exit 0` does. The
 * child, reparented to pid 1 of the computation (dmtcp-nsinit), keeps
 * working: the computation must live on, be checkpointed and restarted with
 * it, and end (with the launched process's status) only when it ends. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	int p[2];
	if (pipe(p) != 0)
		zdtm_fail("pipe");
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0)
		zdtm_fail("fork");
	if (pid > 0) {
		/* The launched process: wait until the child runs, then go. */
		char c;
		close(p[1]);
		if (read(p[0], &c, 1) != 1)
			_exit(3);
		_exit(0);
	}
	close(p[0]);
	if (write(p[1], "x", 1) != 1)
		zdtm_fail("write to the parent");
	close(p[1]);
	while (getppid() == parent)
		zdtm_msleep(5);
	if (getppid() != 1)
		zdtm_fail("reparented to pid %d, expected 1", (int)getppid());
	zdtm_ready();
	unsigned long ticks = 0;
	uint64_t start = zdtm_now_ns();
	while (!zdtm_stop_requested()) {
		zdtm_msleep(20);
		ticks++;
	}
	if (getppid() != 1)
		zdtm_fail("parent is pid %d after restart, expected 1", (int)getppid());
	/* The counter lives in memory: it went on across the restarts. */
	if (ticks < 20)
		zdtm_fail("only %lu ticks", ticks);
	printf("orphan: %lu ticks in %llu ms\n", ticks,
	       (unsigned long long)((zdtm_now_ns() - start) / 1000000));
	zdtm_pass();
}
