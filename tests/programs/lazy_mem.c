/* lazy_mem: memory that changes shape while a restart is still bringing it
 * in (lazy restore from an uncompressed image). Six 16 MiB regions, each
 * filled with its own pattern; in a tight loop, so that the first
 * iterations after a restart run while pages are still arriving:
 *   A  a forked child verifies all of A and exits (fork copies lazy pages);
 *   B  moves back and forth with mremap, a slice verified after each move;
 *   C  a rotating 1 MiB window is MADV_DONTNEED'ed, must read as zeros,
 *      and is written again;
 *   D  a rotating 1 MiB window goes through a pipe into E with write() and
 *      read() (the kernel reads D and writes E: faults in kernel mode);
 *   F  a rotating 1 MiB window is replaced by a fresh mapping (zeros),
 *      then written again.
 * At stop every region is verified whole. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define REGION (16UL << 20)
#define WIN (1UL << 20)
#define NREG 6
/* Region roles. mmap places later regions lower, and the restorer brings
 * pages in from low to high addresses: the roles whose mistakes would be
 * visible (C, D/E) get the highest regions, which arrive last. */
enum { RC = 0, RD = 1, RE = 2, RB = 3, RF = 4, RA = 5 };

static uint64_t pattern(int r, uint64_t i)
{
	uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ULL + (uint64_t)(r + 1) * 0x2545F4914F6CDD1DULL;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return x;
}

static void fill(uint64_t *p, int r, uint64_t from, uint64_t to)
{
	for (uint64_t i = from; i < to; i++)
		p[i] = pattern(r, i);
}

/* Returns the first bad word index, or -1. */
static long check(const uint64_t *p, int r, uint64_t from, uint64_t to)
{
	for (uint64_t i = from; i < to; i++)
		if (p[i] != pattern(r, i))
			return (long)i;
	return -1;
}

static void must(const uint64_t *p, int r, uint64_t from, uint64_t to, const char *what)
{
	long bad = check(p, r, from, to);
	if (bad >= 0)
		zdtm_fail("%s: region %c word %ld is %#lx, expected %#lx", what, 'A' + r, bad,
			  (unsigned long)p[bad], (unsigned long)pattern(r, (uint64_t)bad));
}

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		zdtm_fail("mmap: %m");
	return p;
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	uint64_t *reg[NREG];
	const uint64_t words = REGION / 8, win = WIN / 8;
	for (int r = 0; r < NREG; r++) {
		reg[r] = map(REGION);
		fill(reg[r], r, 0, words);
	}
	/* Spare room for B to move into. */
	uint64_t *spare = map(REGION);
	munmap(spare, REGION);
	int pfd[2];
	if (pipe(pfd) < 0)
		zdtm_fail("pipe: %m");

	unsigned long n = 0;
	zdtm_ready();
	while (!zdtm_stop_requested()) {
		uint64_t w = (n % (REGION / WIN)) * win;

		/* C: dropped pages read as zeros, then are written again. */
		if (madvise(reg[RC] + w, WIN, MADV_DONTNEED) < 0)
			zdtm_fail("madvise: %m");
		for (uint64_t i = w; i < w + win; i++)
			if (reg[RC][i] != 0)
				zdtm_fail("region C word %lu is %#lx after MADV_DONTNEED", (unsigned long)i,
					  (unsigned long)reg[RC][i]);
		fill(reg[RC], RC, w, w + win);

		/* D -> pipe -> E, by the kernel, 64 KiB at a time. E's window then
		 * holds D's pattern: check it, then give E its own back. */
		for (uint64_t off = 0; off < WIN; off += 65536) {
			char *src = (char *)(reg[RD] + w) + off;
			char *dst = (char *)(reg[RE] + w) + off;
			if (write(pfd[1], src, 65536) != 65536)
				zdtm_fail("write from region D: %m");
			ssize_t got = 0;
			while (got < 65536) {
				ssize_t k = read(pfd[0], dst + got, 65536 - got);
				if (k <= 0)
					zdtm_fail("read into region E: %m");
				got += k;
			}
		}
		must(reg[RE], RD, w, w + win, "after read() into E");
		fill(reg[RE], RE, w, w + win);

		/* F: a fresh mapping in the middle reads as zeros. */
		if (mmap(reg[RF] + w, WIN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) == MAP_FAILED)
			zdtm_fail("mmap MAP_FIXED: %m");
		for (uint64_t i = w; i < w + win; i += 512)
			if (reg[RF][i] != 0)
				zdtm_fail("region F word %lu is not zero in a fresh mapping", (unsigned long)i);
		fill(reg[RF], RF, w, w + win);

		/* B: move it, then check where it landed. */
		uint64_t *to = mremap(reg[RB], REGION, REGION, MREMAP_MAYMOVE | MREMAP_FIXED, spare);
		if (to == MAP_FAILED)
			zdtm_fail("mremap: %m");
		spare = reg[RB];
		reg[RB] = to;
		must(reg[RB], RB, w, w + win, "after mremap");

		/* A: a child verifies the whole region. */
		pid_t c = fork();
		if (c < 0)
			zdtm_fail("fork: %m");
		if (c == 0)
			_exit(check(reg[RA], RA, 0, words) >= 0 ? 1 : 0);
		int st;
		if (waitpid(c, &st, 0) != c)
			zdtm_fail("waitpid: %m");
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			zdtm_fail("child of iteration %lu saw region A wrong (status %#x)", n, st);

		n++;
		zdtm_msleep(1);
	}
	for (int r = 0; r < NREG; r++)
		must(reg[r], r, 0, words, "at stop");
	printf("lazy_mem: %lu iterations\n", n);
	zdtm_pass();
}
