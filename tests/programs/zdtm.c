/* zdtm.c: see zdtm.h. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *stop_path;
static const char *out_path;
static const char *prog_name = "zdtm";

void zdtm_init(int argc, char **argv)
{
	(void)argc;
	if (argv && argv[0]) {
		const char *slash = strrchr(argv[0], '/');
		prog_name = slash ? slash + 1 : argv[0];
	}
	stop_path = getenv("ZDTM_STOP");
	out_path = getenv("ZDTM_OUT");
	if (!stop_path || !*stop_path)
		zdtm_fail("ZDTM_STOP is not set");
}

void zdtm_ready(void)
{
	printf("READY\n");
	fflush(stdout);
}

int zdtm_stop_requested(void)
{
	return access(stop_path, F_OK) == 0;
}

static void report(const char *line)
{
	printf("%s\n", line);
	fflush(stdout);
	if (out_path && *out_path) {
		FILE *f = fopen(out_path, "a");
		if (f) {
			fprintf(f, "%s: %s\n", prog_name, line);
			fclose(f);
		}
	}
}

void zdtm_pass(void)
{
	report("PASS");
	exit(0);
}

void zdtm_fail(const char *fmt, ...)
{
	char msg[1024];
	char line[1100];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(line, sizeof(line), "FAIL: %s", msg);
	fprintf(stderr, "%s: %s\n", prog_name, line);
	report(line);
	exit(1);
}

void zdtm_msleep(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

uint64_t zdtm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}
