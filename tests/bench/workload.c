/* Benchmark workload for tests/bench: allocate N MiB and fill it, print READY,
 * then sleep forever (the benchmark checkpoints, kills and restarts it).
 *   workload random N     N MiB of pseudo-random bytes (incompressible)
 *   workload text N       N MiB of text-like data (random words, spaces, newlines)
 *   workload untouched N  N MiB mmap'ed but never touched
 *   workload threads N    N threads blocked in pause() (no extra memory)
 *   workload procs N      16 processes (this one and 15 children) holding
 *                         N/16 MiB of pseudo-random bytes each
 *   workload tree N       N processes (this one and N-1 descendants, a binary
 *                         tree), no extra memory (dmtcp-attach benchmark)
 *   workload dirty N      N MiB of pseudo-random bytes; each line read from
 *                         stdin rewrites 1% of the pages (random ones), then
 *                         "DIRTIED" is printed (incremental checkpoints)
 *   workload rewrite N    N MiB of pseudo-random bytes; each line read from
 *                         stdin writes one word in every page and prints
 *                         "REWROTE <ns>", the time of that pass (the
 *                         runtime cost of a pre-copy tracker left armed)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static inline uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static void *idle(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static void fill_text(char *buf, size_t size)
{
	/* A vocabulary of 4096 words made of syllables, Zipf-ish choice
	 * (short index more likely), so the result compresses like prose. */
	static const char *syl[] = {"the", "an", "re", "in", "er", "on", "at", "ing", "st",
				    "pro", "con", "ment", "tion", "al", "de", "ex", "com",
				    "ly", "ver", "per", "ter", "ca", "mo", "pa", "li", "se",
				    "ar", "or", "ch", "un", "it", "ou"};
	enum { NW = 4096 };
	static char words[NW][24];
	static unsigned char lens[NW];
	for (int w = 0; w < NW; w++) {
		int n = 1 + next() % 3, l = 0;
		for (int s = 0; s < n; s++) {
			const char *p = syl[next() % 32];
			size_t k = strlen(p);
			memcpy(words[w] + l, p, k);
			l += k;
		}
		lens[w] = l;
	}
	size_t pos = 0, line = 0;
	while (pos + 32 < size) {
		uint64_t r = next();
		/* two-level choice: 3/4 of the time from the 256 most common words */
		int w = (r & 3) ? (int)((r >> 2) & 255) : (int)((r >> 2) & (NW - 1));
		memcpy(buf + pos, words[w], 24);
		pos += lens[w];
		line += lens[w] + 1;
		if (line > 72) {
			buf[pos++] = '\n';
			line = 0;
		} else {
			buf[pos++] = ((r >> 20) & 15) == 0 ? ',' : ' ';
		}
	}
	memset(buf + pos, ' ', size - pos);
}

static void fill_random(char *buf, size_t size)
{
	uint64_t *w = (uint64_t *)buf;
	for (size_t i = 0; i < size / 8; i++)
		w[i] = next();
}

static char *map(size_t size)
{
	char *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	return buf;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s random|text|untouched|threads N\n", argv[0]);
		return 2;
	}
	const char *mode = argv[1];
	long n = atol(argv[2]);
	size_t size = (size_t)n << 20;
	if (!strcmp(mode, "procs")) {
		/* Children report "filled" on a pipe; the parent alone says READY. */
		size_t each = size / 16;
		int ready[2];
		if (pipe(ready)) {
			perror("pipe");
			return 1;
		}
		for (int i = 0; i < 15; i++) {
			pid_t p = fork();
			if (p < 0) {
				perror("fork");
				return 1;
			}
			if (p == 0) {
				rng += (uint64_t)(i + 1) * 0x51ED27;
				fill_random(map(each), each);
				if (write(ready[1], "x", 1) != 1)
					return 1;
				for (;;)
					pause();
			}
		}
		fill_random(map(each), each);
		for (int i = 0; i < 15; i++) {
			char c;
			if (read(ready[0], &c, 1) != 1) {
				perror("read");
				return 1;
			}
		}
	} else if (!strcmp(mode, "tree")) {
		/* Process k has children 2k+1 and 2k+2 (k < N); each reports on a
		 * pipe once its own children exist, the root alone says READY. */
		int ready[2];
		if (pipe(ready)) {
			perror("pipe");
			return 1;
		}
		long k = 0;
		int is_child = 0;
		for (int c = 1; c <= 2; c++) {
			long kid = 2 * k + c;
			if (kid >= n)
				continue;
			pid_t p = fork();
			if (p < 0) {
				perror("fork");
				return 1;
			}
			if (p == 0) {
				k = kid;
				c = 0; /* start over as process k */
				is_child = 1;
			}
		}
		if (is_child) {
			if (write(ready[1], "x", 1) != 1)
				return 1;
			for (;;)
				pause();
		}
		for (long i = 1; i < n; i++) {
			char c;
			if (read(ready[0], &c, 1) != 1) {
				perror("read");
				return 1;
			}
		}
	} else if (!strcmp(mode, "rewrite")) {
		char *buf = map(size);
		fill_random(buf, size);
		printf("READY\n");
		fflush(stdout);
		char line[64];
		while (fgets(line, sizeof line, stdin)) {
			struct timespec a, b;
			clock_gettime(CLOCK_MONOTONIC, &a);
			for (size_t off = 0; off < size; off += 4096)
				*(volatile uint64_t *)(buf + off) += 1;
			clock_gettime(CLOCK_MONOTONIC, &b);
			printf("REWROTE %lld\n",
			       (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
			fflush(stdout);
		}
		for (;;)
			pause();
	} else if (!strcmp(mode, "dirty")) {
		char *buf = map(size);
		fill_random(buf, size);
		printf("READY\n");
		fflush(stdout);
		char line[64];
		size_t pages = size / 4096;
		while (fgets(line, sizeof line, stdin)) {
			for (size_t k = 0; k < pages / 100; k++) {
				size_t p = next() % pages;
				uint64_t *w = (uint64_t *)(buf + p * 4096);
				for (int i = 0; i < 512; i++)
					w[i] = next();
			}
			printf("DIRTIED\n");
			fflush(stdout);
		}
		for (;;)
			pause();
	} else if (!strcmp(mode, "threads")) {
		for (long i = 0; i < n; i++) {
			pthread_t t;
			if (pthread_create(&t, NULL, idle, NULL)) {
				perror("pthread_create");
				return 1;
			}
		}
	} else {
		char *buf = map(size);
		if (!strcmp(mode, "random")) {
			fill_random(buf, size);
		} else if (!strcmp(mode, "text")) {
			fill_text(buf, size);
		} else if (strcmp(mode, "untouched")) {
			fprintf(stderr, "unknown mode %s\n", mode);
			return 2;
		}
	}
	printf("READY\n");
	fflush(stdout);
	for (;;)
		pause();
}
