/* ids: prints "euid E egid G" (run from a setuid copy), then follows the
 * zdtm protocol: READY, runs until the stop file exists, PASS. */
#include "zdtm.h"

#include <stdio.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	printf("euid %u egid %u\n", (unsigned)geteuid(), (unsigned)getegid());
	zdtm_ready();
	while (!zdtm_stop_requested())
		zdtm_msleep(10);
	zdtm_pass();
}
