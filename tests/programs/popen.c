/* popen: reads `seq` through popen() (a shell and seq, children of this
 * process, with the pipe full most of the time) and checks every number
 * follows the previous one; meanwhile system() must keep returning the
 * exit status of its command, before and after restarts. SIGCHLD stays
 * blocked and SIGINT/SIGQUIT ignored all along: system() blocks and ignores
 * them while it runs, and the harness compares the signal state it reads
 * just before a checkpoint with the restored one. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	sigprocmask(SIG_BLOCK, &chld, NULL);
	signal(SIGINT, SIG_IGN);
	signal(SIGQUIT, SIG_IGN);
	FILE *in = popen("exec seq 1 100000000", "r");
	if (!in)
		zdtm_fail("popen: %m");
	unsigned long want = 1, systems = 0;
	char line[64];
	zdtm_ready();
	while (!zdtm_stop_requested()) {
		for (int i = 0; i < 200; i++) {
			if (!fgets(line, sizeof line, in))
				zdtm_fail("seq ended after %lu lines", want - 1);
			unsigned long got = strtoul(line, NULL, 10);
			if (got != want)
				zdtm_fail("read %lu from seq, expected %lu", got, want);
			want++;
		}
		if (want % 10000 == 1) {
			int st = system("exit 3");
			if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 3)
				zdtm_fail("system(\"exit 3\") returned %#x", st);
			systems++;
		}
		zdtm_msleep(1);
	}
	printf("popen: %lu lines in order, %lu system() calls\n", want - 1, systems);
	zdtm_pass();
}
