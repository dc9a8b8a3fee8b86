/* heap_rewrite: rewrites its whole heap in a loop, as fast as it can, so that
 * every checkpoint runs while every page is being written (issue 20: a
 * snapshot that lets the program run on must still save the memory of one
 * instant).
 *
 * The heap is PAGES pages; page p of generation g holds g in word 0, p in
 * word 1 and a hash of (p, g, w) in every other word w. The program walks a
 * cursor over the pages: page `cursor` is rewritten from generation
 * `generation` to `generation + 1`, then the cursor moves on; at the end it
 * wraps and `generation` goes up. So at every instant (and in a consistent
 * image) pages before the cursor hold generation+1, pages after it hold
 * generation, and only the page under the cursor may be half written.
 *
 * Before rewriting a page the program checks that it holds exactly
 * `generation` (read-verify-write), so after a restart every page is checked
 * against the restored cursor before it is touched again: a page saved from
 * a later instant (a newer generation past the cursor) or an earlier one (an
 * older generation before it) or a torn page is reported. At stop the whole
 * heap is checked once more. Every 61st page is written by the kernel
 * (read() from a pipe into the heap page) rather than by the CPU.
 *
 * With "maps" the program also changes its memory map all the time (for
 * pre-copy, which must read changed mappings again at the freeze): at
 * every wrap the heap moves (mremap) between two places, so it comes back
 * to an address it left, and a side mapping of SIDE pages is unmapped and
 * mapped again at the same address with new contents (generation-tagged,
 * checked before each refill and at stop), and a third mapping of SIDE
 * pages is alternately filled and dropped with MADV_DONTNEED (then it
 * must read as zeros).
 *
 * With "neighbour" a mapping of SIDE pages right after the heap (one
 * mapping with it at first) moves away with mremap and back into its place
 * every 64 pages rewritten, while the heap itself stays: when it comes
 * back it merges with the heap (same flags), which for the kernel drops
 * the write-protect registration of the whole merged mapping (the dirty
 * tracker must see that, or the heap's later writes look unwritten). Its
 * pages are generation-tagged, checked before each move and at stop.
 *
 * With "fork" the program forks once right before it is ready: two
 * processes of the same heap size rewrite and check their own copy, and
 * the parent passes only if the child's final check passed too.
 *
 *   heap_rewrite [MiB] [maps|neighbour|fork]    (default 32)
 */
#define _GNU_SOURCE
#include "zdtm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORDS 512 /* per page */

static uint64_t *heap;
static uint64_t pages;
#define SIDE 64
static uint64_t *side, *heap_other, *zap;
static volatile uint64_t side_gen, zap_gen;
/* The program's state: saved with the heap, in the same image. */
static volatile uint64_t cursor, generation;

static uint64_t word(uint64_t p, uint64_t g, uint64_t w)
{
	uint64_t x = (p << 24) ^ (g << 44) ^ (w * 0x100000001B3ULL);
	x = x * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
	x ^= x >> 29;
	x *= 0xBF58476D1CE4E5B9ULL;
	x ^= x >> 32;
	return x;
}

static void make_page(uint64_t *dst, uint64_t p, uint64_t g)
{
	dst[0] = g;
	dst[1] = p;
	for (uint64_t w = 2; w < WORDS; w++)
		dst[w] = word(p, g, w);
}

static void check_page(uint64_t p, uint64_t want, const char *when)
{
	const uint64_t *s = heap + p * WORDS;
	if (s[0] != want || s[1] != p)
		zdtm_fail("%s: page %lu holds generation %lu (index word %lu), expected %lu "
			  "(cursor %lu): not the memory of one instant",
			  when, (unsigned long)p, (unsigned long)s[0], (unsigned long)s[1],
			  (unsigned long)want, (unsigned long)cursor);
	for (uint64_t w = 2; w < WORDS; w++)
		if (s[w] != word(p, want, w))
			zdtm_fail("%s: page %lu of generation %lu is torn at word %lu (cursor %lu)",
				  when, (unsigned long)p, (unsigned long)want, (unsigned long)w,
				  (unsigned long)cursor);
}

static void check_side(const char *when)
{
	for (uint64_t i = 0; i < SIDE; i++) {
		const uint64_t *s = side + i * WORDS;
		uint64_t p = (1ULL << 30) + i;
		if (s[0] != side_gen || s[1] != p)
			zdtm_fail("%s: side page %lu holds generation %lu, expected %lu", when,
				  (unsigned long)i, (unsigned long)s[0], (unsigned long)side_gen);
		for (uint64_t w = 2; w < WORDS; w++)
			if (s[w] != word(p, side_gen, w))
				zdtm_fail("%s: side page %lu of generation %lu is torn at word %lu",
					  when, (unsigned long)i, (unsigned long)side_gen, (unsigned long)w);
	}
}

/* The zap mapping: generation-tagged when zap_gen is even, zeros (dropped
 * with MADV_DONTNEED) when it is odd. */
static void check_zap(const char *when)
{
	for (uint64_t i = 0; i < SIDE; i++) {
		const uint64_t *s = zap + i * WORDS;
		uint64_t p = (1ULL << 31) + i;
		for (uint64_t w = 0; w < WORDS; w++) {
			uint64_t want = zap_gen % 2 ? 0 : w == 0 ? zap_gen : w == 1 ? p : word(p, zap_gen, w);
			if (s[w] != want)
				zdtm_fail("%s: zap page %lu of generation %lu holds %#lx at word %lu, expected %#lx",
					  when, (unsigned long)i, (unsigned long)zap_gen, (unsigned long)s[w],
					  (unsigned long)w, (unsigned long)want);
		}
	}
}

/* "neighbour": the mapping after the heap, its two places, its moves. */
static uint64_t *mover, *mover_home, *mover_away;
static volatile uint64_t moves;

static void check_mover(const char *when)
{
	for (uint64_t i = 0; i < SIDE; i++) {
		const uint64_t *s = mover + i * WORDS;
		uint64_t p = (1ULL << 32) + i;
		if (s[0] != 1 || s[1] != p)
			zdtm_fail("%s: moving page %lu holds generation %lu (index word %#lx) after %lu moves",
				  when, (unsigned long)i, (unsigned long)s[0], (unsigned long)s[1],
				  (unsigned long)moves);
		for (uint64_t w = 2; w < WORDS; w++)
			if (s[w] != word(p, 1, w))
				zdtm_fail("%s: moving page %lu is torn at word %lu after %lu moves", when,
					  (unsigned long)i, (unsigned long)w, (unsigned long)moves);
	}
}

/* Moves the neighbour to its other place; the place it left is reserved
 * (PROT_NONE, which does not merge with the heap) for the move back. */
static void move_neighbour(void)
{
	check_mover("before moving");
	uint64_t *to = mover == mover_home ? mover_away : mover_home;
	if (mremap(mover, SIDE * 4096, SIDE * 4096, MREMAP_MAYMOVE | MREMAP_FIXED, to) != to)
		zdtm_fail("mremap neighbour: %m");
	if (mmap(mover, SIDE * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != mover)
		zdtm_fail("mmap reservation: %m");
	mover = to;
	moves++;
}

/* At a wrap: the side mapping made anew at its address, the heap moved,
 * the zap mapping filled or dropped. */
static void churn(uint64_t g)
{
	check_side("before remapping");
	check_zap("before zapping");
	if (g % 2) {
		if (madvise(zap, SIDE * 4096, MADV_DONTNEED))
			zdtm_fail("madvise: %m");
	} else {
		for (uint64_t i = 0; i < SIDE; i++)
			make_page(zap + i * WORDS, (1ULL << 31) + i, g);
	}
	zap_gen = g;
	void *at = side;
	if (munmap(side, SIDE * 4096))
		zdtm_fail("munmap side: %m");
	side = mmap(at, SIDE * 4096, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (side != at)
		zdtm_fail("mmap side again: %m");
	for (uint64_t i = 0; i < SIDE; i++)
		make_page(side + i * WORDS, (1ULL << 30) + i, g);
	side_gen = g;
	uint64_t *to = heap_other;
	if (mremap(heap, pages * 4096, pages * 4096, MREMAP_MAYMOVE | MREMAP_FIXED, to) != to)
		zdtm_fail("mremap heap: %m");
	/* Keep the place it left reserved for the move back. */
	if (mmap(heap, pages * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != heap)
		zdtm_fail("mmap reservation: %m");
	heap_other = heap;
	heap = to;
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	uint64_t mib = argc > 1 ? strtoull(argv[1], NULL, 10) : 32;
	if (mib == 0 || mib > 4096)
		zdtm_fail("bad size %s", argv[1]);
	pages = mib * 256;
	int maps = argc > 2 && strcmp(argv[2], "maps") == 0;
	int neighbour = argc > 2 && strcmp(argv[2], "neighbour") == 0;
	uint64_t extra = neighbour ? SIDE : 0;
	heap = mmap(NULL, (pages + extra) * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		    -1, 0);
	if (heap == MAP_FAILED)
		zdtm_fail("mmap: %m");
	if (neighbour) {
		mover_home = mover = heap + pages * WORDS;
		mover_away = mmap(NULL, SIDE * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (mover_away == MAP_FAILED)
			zdtm_fail("mmap: %m");
		for (uint64_t i = 0; i < SIDE; i++)
			make_page(mover + i * WORDS, (1ULL << 32) + i, 1);
	}
	if (maps) {
		/* Where the heap moves to (a reservation it replaces). */
		heap_other = mmap(NULL, pages * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		side = mmap(NULL, SIDE * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		/* Between two PROT_NONE guard pages: never merged with a neighbour,
		 * so it stays the same mapping in /proc/PID/maps. */
		zap = mmap(NULL, (SIDE + 2) * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (zap != MAP_FAILED) {
			zap += WORDS;
			if (mprotect(zap, SIDE * 4096, PROT_READ | PROT_WRITE))
				zdtm_fail("mprotect: %m");
		}
		if (heap_other == MAP_FAILED || side == MAP_FAILED || zap == MAP_FAILED)
			zdtm_fail("mmap: %m");
		side_gen = 1;
		zap_gen = 1; /* odd: zeros, as mapped */
		for (uint64_t i = 0; i < SIDE; i++)
			make_page(side + i * WORDS, (1ULL << 30) + i, side_gen);
	}
	int pfd[2];
	if (pipe(pfd))
		zdtm_fail("pipe: %m");
	static uint64_t staging[WORDS];
	generation = 1;
	for (uint64_t p = 0; p < pages; p++)
		make_page(heap + p * WORDS, p, generation);
	cursor = 0;
	pid_t child = -1;
	if (argc > 2 && strcmp(argv[2], "fork") == 0) {
		fflush(stdout);
		child = fork();
		if (child < 0)
			zdtm_fail("fork: %m");
		/* A pipe of its own for the kernel's writes. */
		if (child == 0 && (close(pfd[0]) || close(pfd[1]) || pipe(pfd)))
			zdtm_fail("child pipe: %m");
	}
	if (child != 0)
		zdtm_ready();
	uint64_t steps = 0, kernel_writes = 0;
	for (;;) {
		uint64_t p = cursor, g = generation;
		check_page(p, g, "before rewriting");
		if (p % 61 == 0) {
			/* The kernel writes the page: read() from a pipe. */
			make_page(staging, p, g + 1);
			if (write(pfd[1], staging, 4096) != 4096)
				zdtm_fail("pipe write: %m");
			if (read(pfd[0], heap + p * WORDS, 4096) != 4096)
				zdtm_fail("pipe read into the heap: %m");
			kernel_writes++;
		} else {
			make_page(heap + p * WORDS, p, g + 1);
		}
		if (neighbour && steps % 64 == 63)
			move_neighbour();
		if (p + 1 == pages) {
			if (maps)
				churn(g + 1);
			cursor = 0;
			generation = g + 1;
		} else {
			cursor = p + 1;
		}
		if (++steps % 1024 == 0 && zdtm_stop_requested())
			break;
	}
	for (uint64_t p = 0; p < pages; p++)
		check_page(p, p < cursor ? generation + 1 : generation, "final check");
	if (maps) {
		check_side("final check");
		check_zap("final check");
	}
	if (neighbour)
		check_mover("final check");
	printf("heap_rewrite%s: %lu MiB, generation %lu, %lu pages rewritten (%lu by the kernel)\n",
	       child == 0 ? " (child)" : "", (unsigned long)mib, (unsigned long)generation,
	       (unsigned long)steps, (unsigned long)kernel_writes);
	if (child == 0) {
		fflush(stdout);
		_exit(0);
	}
	if (child > 0) {
		int st;
		if (waitpid(child, &st, 0) != child)
			zdtm_fail("waitpid: %m");
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			zdtm_fail("the child's check failed (status %#x)", st);
	}
	zdtm_pass();
}
