/* heap256: 256 MiB of malloc'ed memory filled with a pattern derived from the
 * offset. While running, re-verify a random slice every 50 ms; at stop, verify
 * the whole buffer and that the work counter only moved forward. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define SIZE (256UL << 20)
#define WORDS (SIZE / sizeof(uint64_t))
#define SLICE_WORDS ((4UL << 20) / sizeof(uint64_t))

static uint64_t pattern(uint64_t i)
{
	uint64_t x = i * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return x;
}

static void verify(const uint64_t *buf, uint64_t from, uint64_t to)
{
	for (uint64_t i = from; i < to; i++)
		if (buf[i] != pattern(i))
			zdtm_fail("word %lu (offset %#lx) is %#lx, expected %#lx", (unsigned long)i,
				  (unsigned long)(i * 8), (unsigned long)buf[i],
				  (unsigned long)pattern(i));
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	uint64_t *buf = malloc(SIZE);
	if (!buf)
		zdtm_fail("malloc of 256 MiB failed");
	for (uint64_t i = 0; i < WORDS; i++)
		buf[i] = pattern(i);

	unsigned long counter = 0, last = 0;
	uint64_t rng = 88172645463325252ULL;

	zdtm_ready();
	while (!zdtm_stop_requested()) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		uint64_t start = rng % (WORDS - SLICE_WORDS);
		verify(buf, start, start + SLICE_WORDS);
		counter++;
		if (counter != last + 1)
			zdtm_fail("counter jumped from %lu to %lu", last, counter);
		last = counter;
		zdtm_msleep(50);
	}
	verify(buf, 0, WORDS);
	printf("heap256: %lu slices checked\n", counter);
	zdtm_pass();
}
