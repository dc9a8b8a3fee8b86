/* Runtime-overhead micro-benchmarks for tests/bench, run natively and under
 * dmtcp-run. Prints "NS <total nanoseconds> <iterations>".
 *   overhead getpid N   N raw getpid syscalls (syscall(SYS_getpid): no glibc cache)
 *   overhead fork N     N fork + waitpid of a child that _exit(0)s at once
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	long n = atol(argv[2]);
	long long t0 = now();
	if (!strcmp(argv[1], "getpid")) {
		for (long i = 0; i < n; i++)
			syscall(SYS_getpid);
	} else if (!strcmp(argv[1], "fork")) {
		for (long i = 0; i < n; i++) {
			pid_t p = fork();
			if (p < 0) {
				perror("fork");
				return 1;
			}
			if (p == 0)
				_exit(0);
			int st;
			if (waitpid(p, &st, 0) != p) {
				perror("waitpid");
				return 1;
			}
		}
	} else {
		return 2;
	}
	printf("NS %lld %ld\n", now() - t0, n);
	return 0;
}
