/* sleeper: alternates nanosleep(200 ms) and poll(NULL, 0, 200). A checkpoint
 * must be transparent: an EINTR or a sleep shorter than asked (measured with
 * CLOCK_MONOTONIC) fails the test. Oversleeping is fine. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define SLEEP_NS (200ULL * 1000000ULL)

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	unsigned long sleeps = 0, polls = 0;

	zdtm_ready();
	while (!zdtm_stop_requested()) {
		uint64_t t0 = zdtm_now_ns();
		if ((sleeps + polls) % 2 == 0) {
			struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)SLEEP_NS };
			if (nanosleep(&ts, NULL) != 0)
				zdtm_fail("nanosleep #%lu: %s", sleeps, strerror(errno));
			sleeps++;
		} else {
			int r = poll(NULL, 0, 200);
			if (r != 0)
				zdtm_fail("poll #%lu returned %d: %s", polls, r,
					  r < 0 ? strerror(errno) : "unexpected events");
			polls++;
		}
		uint64_t slept = zdtm_now_ns() - t0;
		if (slept < SLEEP_NS)
			zdtm_fail("short sleep: %llu ns instead of %llu ns",
				  (unsigned long long)slept, (unsigned long long)SLEEP_NS);
	}
	printf("sleeper: %lu nanosleeps, %lu polls\n", sleeps, polls);
	zdtm_pass();
}
