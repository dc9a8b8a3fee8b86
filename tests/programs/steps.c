/* steps: a job with a result. Runs N steps of ~MS ms each (default 20),
 * mixing each step into a running hash, and appends "i hash" to FILE
 * through one fd opened once; after step N it appends "result HASH" and
 * exits 0. The result depends only on N, so a run that was checkpointed,
 * killed and restarted (any number of times) must end with the same file
 * as an uninterrupted run: lines 1..N, each once, in order.
 *
 *   steps FILE N [MS]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
	fprintf(stderr, "steps: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void put(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, buf, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			die("write");
		}
		buf += w;
		len -= (size_t)w;
	}
}

int main(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr, "usage: steps FILE N [MS]\n");
		return 2;
	}
	unsigned long n = strtoul(argv[2], NULL, 10);
	unsigned long ms = argc > 3 ? strtoul(argv[3], NULL, 10) : 20;
	int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die(argv[1]);
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */
	printf("steps: %lu steps of %lu ms into %s\n", n, ms, argv[1]);
	fflush(stdout);
	for (unsigned long i = 1; i <= n; i++) {
		for (int b = 0; b < 8; b++) {
			h ^= (i >> (8 * b)) & 0xff;
			h *= 1099511628211ULL;
		}
		char buf[64];
		int len = snprintf(buf, sizeof(buf), "%lu %016llx\n", i, (unsigned long long)h);
		put(fd, buf, (size_t)len);
		struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	char buf[64];
	int len = snprintf(buf, sizeof(buf), "result %016llx\n", (unsigned long long)h);
	put(fd, buf, (size_t)len);
	if (close(fd) < 0)
		die("close");
	printf("steps: done, result %016llx\n", (unsigned long long)h);
	return 0;
}
