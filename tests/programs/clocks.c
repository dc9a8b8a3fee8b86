/* clocks: CLOCK_MONOTONIC and CLOCK_BOOTTIME never jump. The program sleeps
 * 50 ms at a time; across checkpoints and restarts (with downtime between
 * kill and restart) neither clock may advance by more than the sleep plus
 * MARGIN_MS (argv[1], default 3000: a checkpoint's own freeze is seen), nor
 * go back. CLOCK_REALTIME stays real: over the run it must advance by at
 * least HIDDEN_S (argv[2], default 0) seconds more than CLOCK_MONOTONIC,
 * the downtime the harness put between kill and restart. Arguments that are
 * not numbers (the harness's data file when run bare) leave the defaults. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static long arg_or(int argc, char **argv, int i, long dflt)
{
	if (argc <= i)
		return dflt;
	char *end;
	long v = strtol(argv[i], &end, 10);
	return (*argv[i] && !*end) ? v : dflt;
}

static int64_t now(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	int64_t margin = arg_or(argc, argv, 1, 3000) * 1000000LL;
	int64_t hidden = arg_or(argc, argv, 2, 0) * 1000000000LL;
	const int64_t sleep_ns = 50 * 1000000LL;
	int64_t mono0 = now(CLOCK_MONOTONIC), real0 = now(CLOCK_REALTIME);
	int64_t mono = mono0, boot = now(CLOCK_BOOTTIME);
	int64_t max_mono = 0, max_boot = 0;
	zdtm_ready();
	while (!zdtm_stop_requested()) {
		zdtm_msleep(50);
		int64_t m = now(CLOCK_MONOTONIC), b = now(CLOCK_BOOTTIME);
		int64_t dm = m - mono, db = b - boot;
		if (dm < 0 || db < 0)
			zdtm_fail("a clock went back: monotonic %+lld ns, boottime %+lld ns",
				  (long long)dm, (long long)db);
		if (dm > sleep_ns + margin)
			zdtm_fail("CLOCK_MONOTONIC jumped by %lld ms over a 50 ms sleep",
				  (long long)(dm / 1000000));
		if (db > sleep_ns + margin)
			zdtm_fail("CLOCK_BOOTTIME jumped by %lld ms over a 50 ms sleep",
				  (long long)(db / 1000000));
		if (dm > max_mono)
			max_mono = dm;
		if (db > max_boot)
			max_boot = db;
		mono = m;
		boot = b;
	}
	int64_t real_gap = (now(CLOCK_REALTIME) - real0) - (now(CLOCK_MONOTONIC) - mono0);
	printf("clocks: longest step monotonic %lld ms, boottime %lld ms; realtime ran %lld ms "
	       "ahead of monotonic\n",
	       (long long)(max_mono / 1000000), (long long)(max_boot / 1000000),
	       (long long)(real_gap / 1000000));
	if (hidden > 0 && real_gap < hidden)
		zdtm_fail("CLOCK_REALTIME ran only %lld ms ahead of CLOCK_MONOTONIC, expected %lld s "
			  "of downtime",
			  (long long)(real_gap / 1000000), (long long)(hidden / 1000000000));
	zdtm_pass();
}
