/* Runtime-overhead micro-benchmarks for tests/bench, run natively and under
 * dmtcp-run. Prints "NS <total nanoseconds> <iterations>".
 *   overhead getpid N   N raw getpid syscalls (syscall(SYS_getpid): no glibc cache)
 *   overhead libcgetpid N  N getpid() calls through libc (the inject library's
 *                       wrapper under dmtcp-run, which translates virtual pids
 *                       without namespaces)
 *   overhead wrapcost N interleaved blocks of getpid() (under dmtcp-run: the
 *                       inject library's wrapper) and of glibc's own getpid
 *                       (found with dlsym(RTLD_NEXT)), N calls each; prints
 *                       "NS <wrapper ns> <glibc ns> <N>" (same machine noise
 *                       for both)
 *   overhead pathcost N the same as wrapcost with stat("/proc/1/stat") (the
 *                       inject library's wrapper of the path calls, which
 *                       rewrites /proc/PID paths without namespaces) and
 *                       glibc's stat; "NS <wrapper ns> <glibc ns> <N>"
 *   overhead rawcost N [MS]  interleaved blocks of getpid through an inline
 *                       `syscall` instruction (without namespaces, after a
 *                       restart: trapped by the filter and translated by the
 *                       inject library's SIGSYS handler) and through glibc's
 *                       syscall() (found with dlsym(RTLD_NEXT): libc's text,
 *                       never trapped), N calls each in blocks of 10000;
 *                       "NS <inline ns> <glibc ns> <N>". With MS, it sleeps
 *                       MS ms after each block and prints "BLOCK <inline ns>
 *                       <glibc ns> 10000" per block (so that a checkpoint and
 *                       restart can land in the middle of a run)
 *   overhead fork N     N fork + waitpid of a child that _exit(0)s at once
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
	if (argc != 3 && !(argc == 4 && !strcmp(argv[1], "rawcost")))
		return 2;
	long n = atol(argv[2]);
	long long t0 = now();
	if (!strcmp(argv[1], "getpid")) {
		for (long i = 0; i < n; i++)
			syscall(SYS_getpid);
	} else if (!strcmp(argv[1], "libcgetpid")) {
		/* volatile: every call is made (getpid is not pure for the compiler
		 * anyway, but the sum keeps the loop honest). */
		volatile long sum = 0;
		for (long i = 0; i < n; i++)
			sum += getpid();
	} else if (!strcmp(argv[1], "wrapcost")) {
		pid_t (*glibc)(void) = (pid_t (*)(void))dlsym(RTLD_NEXT, "getpid");
		if (!glibc)
			return 1;
		volatile long sum = 0;
		long long w = 0, g = 0;
		for (long done = 0; done < n; done += 100000) {
			long long a = now();
			for (long i = 0; i < 100000; i++)
				sum += getpid();
			long long b = now();
			for (long i = 0; i < 100000; i++)
				sum += glibc();
			w += b - a;
			g += now() - b;
		}
		printf("NS %lld %lld %ld\n", w, g, n);
		return 0;
	} else if (!strcmp(argv[1], "pathcost")) {
		int (*glibc)(const char *, struct stat *) =
			(int (*)(const char *, struct stat *))dlsym(RTLD_NEXT, "stat");
		if (!glibc)
			return 1;
		struct stat st;
		volatile long sum = 0;
		long long w = 0, g = 0;
		for (long done = 0; done < n; done += 10000) {
			long long a = now();
			for (long i = 0; i < 10000; i++)
				sum += stat("/proc/1/stat", &st);
			long long b = now();
			for (long i = 0; i < 10000; i++)
				sum += glibc("/proc/1/stat", &st);
			w += b - a;
			g += now() - b;
		}
		printf("NS %lld %lld %ld\n", w, g, n);
		return 0;
	} else if (!strcmp(argv[1], "rawcost")) {
		long (*glibc)(long, ...) = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
		if (!glibc)
			return 1;
		long ms = argc == 4 ? atol(argv[3]) : -1;
		volatile long sum = 0;
		long long w = 0, g = 0;
		for (long done = 0; done < n; done += 10000) {
			long long a = now();
			for (long i = 0; i < 10000; i++) {
				long r;
				__asm__ volatile("syscall"
						 : "=a"(r)
						 : "a"((long)SYS_getpid)
						 : "rcx", "r11", "memory");
				sum += r;
			}
			long long b = now();
			for (long i = 0; i < 10000; i++)
				sum += glibc(SYS_getpid);
			long long c = now();
			w += b - a;
			g += c - b;
			if (ms >= 0) {
				printf("BLOCK %lld %lld 10000\n", b - a, c - b);
				fflush(stdout);
				struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
				nanosleep(&ts, NULL);
			}
		}
		printf("NS %lld %lld %ld\n", w, g, n);
		return 0;
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
