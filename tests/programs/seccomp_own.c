/* seccomp_own MODE: a program with its own seccomp filters (or Landlock).
 * Every filter here denies getppid with EXDEV, so the check is the call's
 * result in each thread, every loop, before and after every restart.
 *   tsync    three threads; main installs the filter with TSYNC
 *            (syscall(SYS_seccomp)): getppid fails in all three;
 *   one      thread 1 alone installs it (prctl(PR_SET_SECCOMP)): it fails
 *            there only, main and thread 2 still get their parent;
 *   strict   thread 1 enters strict mode and keeps counting and writing to
 *            a pipe; main checks the kernel still reports mode 1 for it;
 *   listener a filter with its own notification listener (the checkpoint
 *            must be refused);
 *   landlock restricts itself with Landlock (the checkpoint must be refused);
 *   raw      like tsync, but through a raw syscall instruction (no libc:
 *            the inject library cannot log it);
 *   many N   main installs N filters (TSYNC-less), each denying getppid;
 *   kill64   like tsync, and the filter also kills the process on any
 *            rt_sigaction of signal 64, which the program never touches
 *            (a checkpoint must not query that signal's action in it). */
#define _GNU_SOURCE
#include "zdtm.h"

#include <errno.h>
#include <linux/filter.h>
#include <linux/landlock.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static struct sock_filter deny_getppid[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EXDEV),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};
static struct sock_fprog prog = { 4, deny_getppid };

static struct sock_filter notify_getppid[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

/* getppid denied with EXDEV, rt_sigaction(64, ...) kills the process. */
static struct sock_filter kill_sig64[] = {
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EXDEV),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_rt_sigaction, 0, 3),
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 64, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
	BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
};

static const char *mode;
static int nfilters;
static volatile int go_filter, filter_done, stop;
static volatile unsigned long counts[3];
static volatile pid_t tids[3];
static int ping[2], pong[2];

/* 1 when getppid is denied in the calling thread, 0 when allowed. */
static int denied(void)
{
	long r = syscall(SYS_getppid);
	if (r == -1 && errno == EXDEV)
		return 1;
	if (r > 0)
		return 0;
	zdtm_fail("getppid: %ld (%s)", r, strerror(errno));
}

static int should_deny(int idx)
{
	if (!strcmp(mode, "many"))
		return nfilters > 0;
	if (!strcmp(mode, "tsync") || !strcmp(mode, "raw") ||
	    !strcmp(mode, "kill64"))
		return 1;
	if (!strcmp(mode, "one"))
		return idx == 1;
	return 0;
}

static void *worker(void *arg)
{
	int idx = (int)(long)arg;
	tids[idx] = (pid_t)syscall(SYS_gettid);
	if (idx == 1 && !strcmp(mode, "one")) {
		while (!go_filter)
			;
		if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
			zdtm_fail("prctl(PR_SET_SECCOMP): %s", strerror(errno));
		filter_done = 1;
	}
	if (idx == 1 && !strcmp(mode, "strict")) {
		while (!go_filter)
			;
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_STRICT, 0, NULL) != 0)
			zdtm_fail("seccomp(STRICT): %s", strerror(errno));
		filter_done = 1;
		/* Only read, write, exit and sigreturn from here on: echo
		 * every byte main sends, until 'q'. */
		for (;;) {
			char c;
			if (read(ping[0], &c, 1) != 1 || c == 'q')
				syscall(SYS_exit, 0);
			counts[idx]++;
			if (write(pong[1], &c, 1) != 1)
				syscall(SYS_exit, 1);
		}
	}
	while (!filter_done)
		;
	while (!stop) {
		if (denied() != should_deny(idx))
			zdtm_fail("thread %d: getppid %s, expected %s", idx,
				  denied() ? "denied" : "allowed",
				  should_deny(idx) ? "denied" : "allowed");
		counts[idx]++;
		usleep(1000);
	}
	return NULL;
}

static int task_seccomp_mode(pid_t tid)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/self/task/%d/status", tid);
	FILE *f = fopen(path, "r");
	if (!f)
		zdtm_fail("%s: %s", path, strerror(errno));
	int mode_ = -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "Seccomp: %d", &mode_) == 1)
			break;
	fclose(f);
	return mode_;
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	if (argc < 2)
		zdtm_fail("usage: seccomp_own MODE");
	mode = argv[1];
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		zdtm_fail("no_new_privs: %s", strerror(errno));
	if (pipe(ping) != 0 || pipe(pong) != 0)
		zdtm_fail("pipe");
	pthread_t th[3];
	for (long i = 1; i < 3; i++)
		if (pthread_create(&th[i], NULL, worker, (void *)i) != 0)
			zdtm_fail("pthread_create");
	while (!tids[1] || !tids[2])
		;
	if (!strcmp(mode, "tsync")) {
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
			    SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0)
			zdtm_fail("seccomp(TSYNC): %s", strerror(errno));
		filter_done = 1;
	} else if (!strcmp(mode, "kill64")) {
		struct sock_fprog kp = { 8, kill_sig64 };
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
			    SECCOMP_FILTER_FLAG_TSYNC, &kp) != 0)
			zdtm_fail("seccomp(TSYNC): %s", strerror(errno));
		filter_done = 1;
	} else if (!strcmp(mode, "raw")) {
		long r;
		__asm__ volatile("syscall"
				 : "=a"(r)
				 : "a"((long)SYS_seccomp), "D"((long)SECCOMP_SET_MODE_FILTER),
				   "S"((long)SECCOMP_FILTER_FLAG_TSYNC), "d"(&prog)
				 : "rcx", "r11", "memory");
		if (r != 0)
			zdtm_fail("raw seccomp: %ld", r);
		filter_done = 1;
	} else if (!strcmp(mode, "many")) {
		int n = argc > 2 ? atoi(argv[2]) : 10;
		nfilters = n;
		for (int i = 0; i < n; i++)
			if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
				    SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0)
				zdtm_fail("seccomp #%d: %s", i, strerror(errno));
		filter_done = 1;
	} else if (!strcmp(mode, "listener")) {
		struct sock_fprog np = { 4, notify_getppid };
		int fd = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
				      SECCOMP_FILTER_FLAG_NEW_LISTENER, &np);
		if (fd < 0)
			zdtm_fail("seccomp(NEW_LISTENER): %s", strerror(errno));
		filter_done = 1;
	} else if (!strcmp(mode, "landlock")) {
		struct landlock_ruleset_attr attr = {
			.handled_access_fs = LANDLOCK_ACCESS_FS_MAKE_DIR,
		};
		int rs = (int)syscall(SYS_landlock_create_ruleset, &attr,
				      sizeof attr, 0);
		if (rs < 0)
			zdtm_fail("landlock_create_ruleset: %s", strerror(errno));
		if (syscall(SYS_landlock_restrict_self, rs, 0) != 0)
			zdtm_fail("landlock_restrict_self: %s", strerror(errno));
		close(rs);
		filter_done = 1;
	} else {
		go_filter = 1;
		while (!filter_done)
			;
	}
	zdtm_ready();
	unsigned long last = 0;
	while (!zdtm_stop_requested()) {
		if (!strcmp(mode, "strict")) {
			char c = 'p';
			if (task_seccomp_mode(tids[1]) != 1)
				zdtm_fail("thread 1 is no longer in strict mode");
			if (write(ping[1], &c, 1) != 1 || read(pong[0], &c, 1) != 1 || c != 'p')
				zdtm_fail("the strict thread does not echo");
			if (counts[1] == last)
				zdtm_fail("the strict thread stopped counting");
			last = counts[1];
		} else if (strcmp(mode, "listener") && strcmp(mode, "landlock")) {
			if (denied() != should_deny(0))
				zdtm_fail("main: getppid %s",
					  denied() ? "denied" : "allowed");
		}
		zdtm_msleep(100);
	}
	stop = 1;
	if (!strcmp(mode, "strict")) {
		char q = 'q';
		if (write(ping[1], &q, 1) != 1)
			zdtm_fail("write");
	}
	printf("seccomp_own %s: counts %lu %lu %lu\n", mode, counts[0],
	       counts[1], counts[2]);
	zdtm_pass();
}
