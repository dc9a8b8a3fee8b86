/* counter: writes "N\n" (N = 1, 2, 3, ...) every ~10 ms through one fd opened
 * once. After restart the file offset must continue where it was: at stop the
 * file holds exactly 1..N (no gap, no duplicate) and the fd offset equals the
 * file size. The pid must never change. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	if (argc < 2)
		zdtm_fail("usage: counter FILE");

	const char *path = argv[1];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		zdtm_fail("open %s: %s", path, strerror(errno));
	pid_t pid0 = getpid();
	unsigned long n = 0;

	zdtm_ready();
	while (!zdtm_stop_requested()) {
		char buf[32];
		int len = snprintf(buf, sizeof(buf), "%lu\n", n + 1);
		ssize_t w = write(fd, buf, (size_t)len);
		if (w != len)
			zdtm_fail("write of line %lu returned %zd: %s", n + 1, w, strerror(errno));
		n++;
		if (getpid() != pid0)
			zdtm_fail("pid changed from %d to %d", (int)pid0, (int)getpid());
		zdtm_msleep(10);
	}

	off_t off = lseek(fd, 0, SEEK_CUR);
	struct stat st;
	if (stat(path, &st) < 0)
		zdtm_fail("stat %s: %s", path, strerror(errno));
	if (off != st.st_size)
		zdtm_fail("fd offset %lld != file size %lld", (long long)off, (long long)st.st_size);

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
	if (expect - 1 != n)
		zdtm_fail("file holds %lu lines, counter is %lu", expect - 1, n);
	if (n == 0)
		zdtm_fail("no line written");
	printf("counter: %lu lines\n", n);
	zdtm_pass();
}
