/* gdbstack: a known call stack and known globals for debugger tests.
 * main -> level1 -> level2, which appends "N\n" (N = 1, 2, ...) to FILE
 * every ~10 ms until the stop file appears; a second thread sleeps in
 * helper_loop. A debugger attached to the process (or reading a core file
 * of it) must see level2, level1 and main on the stack, gdb_answer == 4242
 * and gdb_ticks equal to the last line written. At stop, FILE must hold
 * exactly 1..N (no gap, no duplicate). */
#define _GNU_SOURCE
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

volatile long gdb_answer = 4242;
volatile unsigned long gdb_ticks;
static volatile int helper_running = 1;

__attribute__((noinline)) void level2(int fd)
{
	while (!zdtm_stop_requested()) {
		char buf[32];
		int len = snprintf(buf, sizeof(buf), "%lu\n", gdb_ticks + 1);
		ssize_t w = write(fd, buf, (size_t)len);
		if (w != len)
			zdtm_fail("write of line %lu returned %zd: %s", gdb_ticks + 1, w,
				  strerror(errno));
		gdb_ticks++;
		zdtm_msleep(10);
	}
	__asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void level1(int fd)
{
	level2(fd);
	__asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) void *helper_loop(void *arg)
{
	(void)arg;
	while (helper_running)
		zdtm_msleep(50);
	return NULL;
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	if (argc < 2)
		zdtm_fail("usage: gdbstack FILE");
	const char *path = argv[1];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		zdtm_fail("open %s: %s", path, strerror(errno));
	pthread_t helper;
	if (pthread_create(&helper, NULL, helper_loop, NULL) != 0)
		zdtm_fail("pthread_create failed");

	zdtm_ready();
	level1(fd);
	helper_running = 0;
	pthread_join(helper, NULL);
	if (gdb_answer != 4242)
		zdtm_fail("gdb_answer is %ld, not 4242", gdb_answer);

	FILE *f = fopen(path, "r");
	if (!f)
		zdtm_fail("reopen %s: %s", path, strerror(errno));
	unsigned long expect = 1, got;
	char line[64];
	while (fgets(line, sizeof(line), f)) {
		char *end;
		got = strtoul(line, &end, 10);
		if (end == line || *end != '\n')
			zdtm_fail("line %lu is malformed: '%s'", expect, line);
		if (got != expect)
			zdtm_fail("line %lu holds %lu (gap or duplicate)", expect, got);
		expect++;
	}
	fclose(f);
	if (expect - 1 != gdb_ticks)
		zdtm_fail("file holds %lu lines, gdb_ticks is %lu", expect - 1, gdb_ticks);
	zdtm_pass();
}
