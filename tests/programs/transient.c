/* transient: a process that belongs to the computation for a while only. A
 * double fork leaves `sleep 4` orphaned (reparented to the computation's pid
 * 1, which reaps it when it ends); the program itself runs on until the
 * stop file. A checkpoint taken while `sleep` lives has its image; one taken
 * after leaves that image behind, stale, in the directory. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	pid_t mid = fork();
	if (mid < 0)
		zdtm_fail("fork");
	if (mid == 0) {
		if (fork() == 0) {
			execlp("sleep", "sleep", "4", (char *)NULL);
			_exit(127);
		}
		_exit(0);
	}
	int st;
	if (waitpid(mid, &st, 0) != mid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		zdtm_fail("the intermediate child failed");
	zdtm_ready();
	unsigned long ticks = 0;
	while (!zdtm_stop_requested()) {
		zdtm_msleep(20);
		ticks++;
	}
	printf("transient: %lu ticks\n", ticks);
	zdtm_pass();
}
