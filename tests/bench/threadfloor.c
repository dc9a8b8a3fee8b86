/* threadfloor N REPS: the floor of freezing a process of N idle threads
 * from outside, for the benchmark (issue 20): a child makes N threads
 * blocked in pause(); the parent, REPS times, seizes every thread with
 * ptrace, interrupts it, waits for its stop, then detaches them all (the
 * freeze and thaw with nothing else done), and prints "FLOOR <ns>" per
 * repetition. */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void *idle(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static long long now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s NTHREADS REPS\n", argv[0]);
		return 2;
	}
	int n = atoi(argv[1]), reps = atoi(argv[2]);
	int ready[2];
	if (pipe(ready))
		return 1;
	pid_t child = fork();
	if (child == 0) {
		for (int i = 0; i < n; i++) {
			pthread_t t;
			if (pthread_create(&t, NULL, idle, NULL))
				_exit(1);
		}
		if (write(ready[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	char c;
	if (read(ready[0], &c, 1) != 1)
		return 1;
	char path[64];
	snprintf(path, sizeof path, "/proc/%d/task", child);
	static pid_t tids[65536];
	int nt = 0;
	DIR *d = opendir(path);
	struct dirent *e;
	while (d && (e = readdir(d)) && nt < 65536)
		if (e->d_name[0] != '.')
			tids[nt++] = atoi(e->d_name);
	if (d)
		closedir(d);
	for (int r = 0; r < reps; r++) {
		long long t0 = now();
		for (int i = 0; i < nt; i++) {
			if (ptrace(PTRACE_SEIZE, tids[i], 0, 0) || ptrace(PTRACE_INTERRUPT, tids[i], 0, 0)) {
				perror("ptrace");
				kill(child, SIGKILL);
				return 1;
			}
		}
		for (int i = 0; i < nt; i++) {
			int st;
			if (waitpid(tids[i], &st, __WALL) != tids[i]) {
				perror("waitpid");
				kill(child, SIGKILL);
				return 1;
			}
		}
		for (int i = 0; i < nt; i++)
			ptrace(PTRACE_DETACH, tids[i], 0, 0);
		printf("FLOOR %lld\n", now() - t0);
		fflush(stdout);
		usleep(20000);
	}
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return 0;
}
