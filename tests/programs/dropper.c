/* dropper: as root, drops to uid/gid 65534 with no supplementary groups
 * (setgroups, setresgid, setresuid, as a daemon does), starts a second
 * thread, then every ~50 ms appends to FILE one line per thread:
 *   "T uid R E S FS gid R E S FS groups N caneff CAPEFF shadow yes|no"
 * with T "main" or "thread", the thread's own ids (credentials are per
 * thread in Linux: read with raw syscalls, not the process-wide libc view),
 * and whether /etc/shadow opens for reading. Run as non-root it drops
 * nothing. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/syscall.h>
#include <unistd.h>

static int out_fd;

static void report(const char *who)
{
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	syscall(SYS_getresuid, &ru, &eu, &su);
	syscall(SYS_getresgid, &rg, &eg, &sg);
	int fsu = (int)syscall(SYS_setfsuid, -1);
	int fsg = (int)syscall(SYS_setfsgid, -1);
	int ngroups = getgroups(0, NULL);
	unsigned long long capeff = 0;
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/self/task/%ld/status", (long)syscall(SYS_gettid));
	FILE *f = fopen(path, "r");
	if (f) {
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "CapEff: %llx", &capeff) == 1)
				break;
		fclose(f);
	}
	int sfd = open("/etc/shadow", O_RDONLY | O_CLOEXEC);
	if (sfd >= 0)
		close(sfd);
	int len = snprintf(line, sizeof(line),
			   "%s uid %u %u %u %d gid %u %u %u %d groups %d capeff %llx shadow %s\n", who,
			   ru, eu, su, fsu, rg, eg, sg, fsg, ngroups, capeff, sfd >= 0 ? "yes" : "no");
	if (write(out_fd, line, (size_t)len) != len)
		zdtm_fail("write: %s", strerror(errno));
}

static void *thread_main(void *arg)
{
	(void)arg;
	for (;;) {
		report("thread");
		zdtm_msleep(50);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	if (argc < 2)
		zdtm_fail("usage: dropper FILE");
	out_fd = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
	if (out_fd < 0)
		zdtm_fail("open %s: %s", argv[1], strerror(errno));
	if (geteuid() == 0) {
		if (setgroups(0, NULL) < 0 || setresgid(65534, 65534, 65534) < 0 ||
		    setresuid(65534, 65534, 65534) < 0)
			zdtm_fail("dropping to uid 65534: %s", strerror(errno));
	}
	pthread_t t;
	if (pthread_create(&t, NULL, thread_main, NULL) != 0)
		zdtm_fail("pthread_create");
	zdtm_ready();
	while (!zdtm_stop_requested()) {
		report("main");
		zdtm_msleep(50);
	}
	zdtm_pass();
}
