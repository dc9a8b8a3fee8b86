/* procself: /proc is the computation's own. /proc/self, /proc/<getpid()>
 * and /proc/self/status name the pid the program sees, before the
 * checkpoint and after every restart. With argv[1] "in-computation", /proc/1
 * must also be the computation's pid 1 (dmtcp-nsinit). An fd of
 * /proc/self/status held open from the start (DMTCP's procfd1) reads this
 * process's status after every restart too. With argv[1] "no-namespaces"
 * (restarts give new kernel pids, which /proc shows) only that: the held
 * fd must read the status of the process itself, the one a fresh open of
 * /proc/self/status reads. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <stdio.h>
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static long status_field(const char *path, const char *key)
{
	FILE *f = fopen(path, "r");
	if (!f)
		zdtm_fail("open %s", path);
	char line[256];
	long v = -1;
	size_t k = strlen(key);
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, key, k) == 0 && line[k] == ':') {
			v = strtol(line + k + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return v;
}

static void read_line(const char *path, char *buf, size_t n)
{
	FILE *f = fopen(path, "r");
	if (!f)
		zdtm_fail("open %s", path);
	if (!fgets(buf, (int)n, f))
		buf[0] = 0;
	fclose(f);
	buf[strcspn(buf, "\n")] = 0;
}

static int in_computation, no_namespaces;
static int held = -1; /* /proc/self/status, open since the start */

static long held_pid(const char *when)
{
	char sb[4096];
	ssize_t k = pread(held, sb, sizeof sb - 1, 0);
	if (k <= 0)
		zdtm_fail("%s: reading the held /proc/self/status fd", when);
	sb[k] = 0;
	const char *at = strstr(sb, "\nPid:");
	return at ? atol(at + 5) : -1L;
}

static void check(const char *when)
{
	pid_t me = getpid();
	char buf[256], path[64];
	if (no_namespaces) {
		long now = status_field("/proc/self/status", "Pid");
		long was = held_pid(when);
		if (was != now)
			zdtm_fail("%s: the held /proc/self/status fd says Pid %ld, /proc/self/status %ld",
				  when, was, now);
		return;
	}
	ssize_t n = readlink("/proc/self", buf, sizeof buf - 1);
	if (n <= 0)
		zdtm_fail("%s: readlink /proc/self", when);
	buf[n] = 0;
	if (atol(buf) != me)
		zdtm_fail("%s: /proc/self is %s, getpid() is %d", when, buf, (int)me);
	long pid = status_field("/proc/self/status", "Pid");
	if (pid != me)
		zdtm_fail("%s: /proc/self/status Pid is %ld, getpid() is %d", when, pid, (int)me);
	long ppid = status_field("/proc/self/status", "PPid");
	if (ppid != getppid())
		zdtm_fail("%s: /proc/self/status PPid is %ld, getppid() is %d", when, ppid,
			  (int)getppid());
	snprintf(path, sizeof path, "/proc/%d/comm", (int)me);
	read_line(path, buf, sizeof buf);
	if (strcmp(buf, "procself") != 0)
		zdtm_fail("%s: %s is \"%s\", expected \"procself\"", when, path, buf);
	long was = held_pid(when);
	if (was != me)
		zdtm_fail("%s: the held /proc/self/status fd says Pid %ld, getpid() is %d", when, was,
			  (int)me);
	if (!in_computation)
		return;
	read_line("/proc/1/comm", buf, sizeof buf);
	if (strcmp(buf, "dmtcp-nsinit") != 0)
		zdtm_fail("%s: /proc/1/comm is \"%s\", expected \"dmtcp-nsinit\"", when, buf);
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	in_computation = argc > 1 && strcmp(argv[1], "in-computation") == 0;
	no_namespaces = argc > 1 && strcmp(argv[1], "no-namespaces") == 0;
	held = open("/proc/self/status", O_RDONLY);
	if (held < 0)
		zdtm_fail("open /proc/self/status");
	check("at start");
	zdtm_ready();
	unsigned long checks = 0;
	while (!zdtm_stop_requested()) {
		check("while running");
		checks++;
		zdtm_msleep(50);
	}
	check("at the end");
	printf("procself: %lu checks\n", checks);
	zdtm_pass();
}
