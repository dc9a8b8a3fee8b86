/* Benchmark workload for tests/bench: allocate N MiB and fill it, print READY,
 * then sleep forever (the benchmark checkpoints, kills and restarts it).
 *   workload random N     N MiB of pseudo-random bytes (incompressible)
 *   workload text N       N MiB of text-like data (random words, spaces, newlines)
 *   workload untouched N  N MiB mmap'ed but never touched
 *   workload threads N    N threads blocked in pause() (no extra memory)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s random|text|untouched|threads N\n", argv[0]);
		return 2;
	}
	const char *mode = argv[1];
	long n = atol(argv[2]);
	size_t size = (size_t)n << 20;
	if (!strcmp(mode, "threads")) {
		for (long i = 0; i < n; i++) {
			pthread_t t;
			if (pthread_create(&t, NULL, idle, NULL)) {
				perror("pthread_create");
				return 1;
			}
		}
	} else {
		char *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (buf == MAP_FAILED) {
			perror("mmap");
			return 1;
		}
		if (!strcmp(mode, "random")) {
			uint64_t *w = (uint64_t *)buf;
			for (size_t i = 0; i < size / 8; i++)
				w[i] = next();
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
