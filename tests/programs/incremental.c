/* incremental: 64 MiB of incompressible pages, of which a few are rewritten
 * every 20 ms (page p holds pattern(p, version[p]) in every word). Also
 * exercises what incremental images must get right besides plain writes:
 * pages dropped with MADV_DONTNEED (zero again), a mapping unmapped and
 * mapped again at the same address, and pages written by the kernel
 * (read() from a pipe into the buffer). The whole buffer is verified
 * against the version table every second and at stop. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGES 16384UL /* 64 MiB */
#define WORDS_PER_PAGE 512
#define SIDE_PAGES 64

static uint64_t pattern(uint64_t page, uint64_t version, uint64_t word)
{
	if (version == 0)
		return 0; /* dropped with MADV_DONTNEED: reads as zero */
	uint64_t x = (page << 20) ^ (version << 40) ^ word;
	x = x * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return x;
}

static uint64_t *buf;
static uint64_t version[PAGES];

static void fill(uint64_t p)
{
	for (uint64_t w = 0; w < WORDS_PER_PAGE; w++)
		buf[p * WORDS_PER_PAGE + w] = pattern(p, version[p], w);
}

static void verify_all(const char *when)
{
	for (uint64_t p = 0; p < PAGES; p++)
		for (uint64_t w = 0; w < WORDS_PER_PAGE; w++)
			if (buf[p * WORDS_PER_PAGE + w] != pattern(p, version[p], w))
				zdtm_fail("%s: page %lu word %lu is %#lx, expected version %lu",
					  when, (unsigned long)p, (unsigned long)w,
					  (unsigned long)buf[p * WORDS_PER_PAGE + w],
					  (unsigned long)version[p]);
}

/* A side mapping unmapped and mapped again (same address, new content). */
static unsigned char *side;
static unsigned side_gen;

static void remap_side(void)
{
	munmap(side, SIDE_PAGES * 4096);
	void *p = mmap(side, SIDE_PAGES * 4096, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p != side)
		zdtm_fail("remapping the side mapping: %m");
	side_gen++;
	/* Half the pages written, half left zero. */
	for (unsigned i = 0; i < SIDE_PAGES; i += 2)
		memset(side + i * 4096, (int)(side_gen & 0xff) | 1, 4096);
}

static void verify_side(const char *when)
{
	for (unsigned i = 0; i < SIDE_PAGES; i++) {
		unsigned char want = i % 2 ? 0 : (unsigned char)((side_gen & 0xff) | 1);
		for (unsigned j = 0; j < 4096; j++)
			if (side[i * 4096 + j] != want)
				zdtm_fail("%s: side page %u byte %u is %u, expected %u (gen %u)",
					  when, i, j, side[i * 4096 + j], want, side_gen);
	}
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	buf = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	side = mmap(NULL, SIDE_PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		    -1, 0);
	if (buf == MAP_FAILED || side == MAP_FAILED)
		zdtm_fail("mmap: %m");
	for (uint64_t p = 0; p < PAGES; p++) {
		version[p] = 1;
		fill(p);
	}
	remap_side();
	int pfd[2];
	if (pipe(pfd))
		zdtm_fail("pipe: %m");

	uint64_t rng = 88172645463325252ULL, tick = 0;
	uint64_t last_check = zdtm_now_ns();
	zdtm_ready();
	while (!zdtm_stop_requested()) {
		tick++;
		/* Rewrite 4 random pages. */
		for (int k = 0; k < 4; k++) {
			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			uint64_t p = rng % PAGES;
			version[p] = tick + 1;
			fill(p);
		}
		/* Every 8 ticks drop a page; every 16, the kernel writes one. */
		if (tick % 8 == 0) {
			uint64_t p = (tick * 7919) % PAGES;
			if (madvise(buf + p * WORDS_PER_PAGE, 4096, MADV_DONTNEED))
				zdtm_fail("madvise: %m");
			version[p] = 0;
		}
		if (tick % 16 == 0) {
			uint64_t p = (tick * 104729) % PAGES;
			version[p] = tick + 1;
			static uint64_t page[WORDS_PER_PAGE];
			for (uint64_t w = 0; w < WORDS_PER_PAGE; w++)
				page[w] = pattern(p, version[p], w);
			if (write(pfd[1], page, 4096) != 4096 ||
			    read(pfd[0], buf + p * WORDS_PER_PAGE, 4096) != 4096)
				zdtm_fail("pipe round trip: %m");
		}
		if (tick % 50 == 0)
			remap_side();
		if (zdtm_now_ns() - last_check > 1000000000ULL) {
			verify_all("periodic check");
			verify_side("periodic check");
			last_check = zdtm_now_ns();
		}
		zdtm_msleep(20);
	}
	verify_all("final check");
	verify_side("final check");
	printf("incremental: %lu ticks\n", (unsigned long)tick);
	zdtm_pass();
}
