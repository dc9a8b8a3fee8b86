/* nondumpable: a counter loop after prctl(PR_SET_DUMPABLE, 0), a process
 * that refuses to be inspected (dmtcp-attach must refuse it and leave it
 * running). Prints READY, then PASS after the stop file. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <sys/prctl.h>

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))
		zdtm_fail("prctl(PR_SET_DUMPABLE, 0)");
	unsigned long n = 0;
	zdtm_ready();
	while (!zdtm_stop_requested()) {
		n++;
		zdtm_msleep(10);
	}
	if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
		zdtm_fail("dumpable again");
	if (n == 0)
		zdtm_fail("never ran");
	zdtm_pass();
}
