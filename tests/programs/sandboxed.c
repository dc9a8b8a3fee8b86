/* sandboxed MODE: runs under dmtcp-run --sandbox and checks, every loop,
 * before and after every restart, that the policy holds and allowed work
 * goes on.
 *   default  the default policy: unshare(CLONE_NEWUSER), bpf, mount,
 *            keyctl, perf_event_open, kexec_load fail with EPERM;
 *   profile  tests' Docker-format profile: getppid fails with EXDEV;
 *   none     no sandbox: everything above is just not EPERM (the check
 *            that the test really tests something);
 *   landlock R W  --allow-read R --allow-write W (and what the program
 *            needs to run): R/data reads, nothing can be created in R,
 *            W/out can be written, /etc/hostname cannot be read;
 *   netnone  --net=none: only the loopback interface exists, an outside
 *            address is unreachable, a TCP round trip over loopback works.
 * Every mode also tries to escape: the denied call is made from the
 * `syscall` instruction the supervisor injects through (the first one in
 * the vDSO), entered by a jump with the trap flag set; it must fail the
 * same way. Allowed work: fork + wait, writing a file. */
#define _GNU_SOURCE
#include "zdtm.h"

#include <errno.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <ucontext.h>
#include <unistd.h>

static const char *mode;
static sigjmp_buf env;
static unsigned long target;
static volatile long escape_ret;
static char fake_frame[1 << 16] __attribute__((aligned(16)));

static void on_trap(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)si;
	ucontext_t *uc = ctx;
	unsigned long rip = uc->uc_mcontext.gregs[REG_RIP];
	if (rip == target)
		return; /* about to run the syscall: single-step on */
	escape_ret = uc->uc_mcontext.gregs[REG_RAX];
	siglongjmp(env, 1);
}

/* The first `syscall` instruction of the vDSO, as the supervisor finds it. */
static unsigned long vdso_syscall(void)
{
	unsigned char *v = (unsigned char *)getauxval(AT_SYSINFO_EHDR);
	if (!v)
		zdtm_fail("no vDSO");
	for (int i = 0; i < 8192; i++)
		if (v[i] == 0x0f && v[i + 1] == 0x05)
			return (unsigned long)(v + i);
	zdtm_fail("no syscall instruction in the vDSO");
}

/* Runs syscall nr(a0) at the vDSO's syscall instruction: raw result. */
static long escape(long nr, long a0)
{
	if (sigsetjmp(env, 1) == 0) {
		register char *frame __asm__("r8") = fake_frame + sizeof fake_frame / 2;
		/* The vDSO's code after its syscall may use rbp (`leave`):
		 * give it a valid frame; the trap after that instruction
		 * ends the attempt (siglongjmp restores our registers). */
		__asm__ volatile("mov %%r8, %%rbp; pushfq; orq $0x100, (%%rsp); popfq; jmp *%%rbx"
				 :
				 : "b"(target), "a"(nr), "D"(a0), "S"(0L), "d"(0L),
				   "r"(frame)
				 : "memory", "rcx", "r11");
		__builtin_unreachable();
	}
	return escape_ret;
}

static int fails_with(long r, int e)
{
	return r == -1 && errno == e;
}

static void check_net(void)
{
	char line[256];
	FILE *f = fopen("/proc/net/dev", "r");
	if (!f)
		zdtm_fail("/proc/net/dev: %s", strerror(errno));
	int n = 0;
	while (fgets(line, sizeof line, f)) {
		char name[64];
		if (strchr(line, '|'))
			continue;
		if (sscanf(line, " %63[^:]:", name) == 1 && strcmp(name, "lo"))
			zdtm_fail("interface %s exists", name);
		n++;
	}
	fclose(f);
	if (n != 1)
		zdtm_fail("%d interfaces, expected only lo", n);
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in out = { .sin_family = AF_INET, .sin_port = htons(9) };
	inet_pton(AF_INET, "192.0.2.1", &out.sin_addr);
	if (connect(u, (struct sockaddr *)&out, sizeof out) == 0 || errno != ENETUNREACH)
		zdtm_fail("192.0.2.1 is reachable (%s)", strerror(errno));
	close(u);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in lo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof lo;
	if (bind(l, (struct sockaddr *)&lo, sizeof lo) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&lo, &len))
		zdtm_fail("loopback listen: %s", strerror(errno));
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (struct sockaddr *)&lo, sizeof lo))
		zdtm_fail("loopback connect: %s", strerror(errno));
	int a = accept(l, NULL, NULL);
	char b = 'x';
	if (a < 0 || write(c, &b, 1) != 1 || read(a, &b, 1) != 1 || b != 'x')
		zdtm_fail("loopback round trip");
	close(a);
	close(c);
	close(l);
}

static const char *ro_dir, *rw_dir;

static void check_landlock(void)
{
	char p[4096];
	snprintf(p, sizeof p, "%s/data", ro_dir);
	int fd = open(p, O_RDONLY);
	char b[8];
	if (fd < 0 || read(fd, b, 4) != 4 || memcmp(b, "data", 4))
		zdtm_fail("%s: cannot read it: %s", p, strerror(errno));
	close(fd);
	snprintf(p, sizeof p, "%s/new", ro_dir);
	fd = open(p, O_WRONLY | O_CREAT, 0600);
	if (fd >= 0 || errno != EACCES)
		zdtm_fail("%s: created in a read-only path (%s)", p, strerror(errno));
	snprintf(p, sizeof p, "%s/out", rw_dir);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, "x", 1) != 1)
		zdtm_fail("%s: cannot write it: %s", p, strerror(errno));
	close(fd);
	fd = open("/etc/hostname", O_RDONLY);
	if (fd >= 0 || errno != EACCES)
		zdtm_fail("/etc/hostname is readable (%s)", strerror(errno));
}

static void check(void)
{
	errno = 0;
	if (!strcmp(mode, "landlock")) {
		check_landlock();
	} else if (!strcmp(mode, "netnone")) {
		check_net();
	} else if (!strcmp(mode, "default") || !strcmp(mode, "none")) {
		int want = !strcmp(mode, "default");
		/* Re-run one by one to read each errno. */
		long r;
		r = syscall(SYS_unshare, CLONE_NEWUSER);
		if (want && !fails_with(r, EPERM))
			zdtm_fail("unshare(CLONE_NEWUSER): %ld (%s)", r, strerror(errno));
		r = syscall(SYS_bpf, 0, NULL, 0);
		if (want && !fails_with(r, EPERM))
			zdtm_fail("bpf: %ld (%s)", r, strerror(errno));
		r = syscall(SYS_mount, "none", "/nonexistent", "tmpfs", 0, NULL);
		if (want && !fails_with(r, EPERM))
			zdtm_fail("mount: %ld (%s)", r, strerror(errno));
		r = syscall(SYS_keyctl, 0, 0, 0, 0, 0);
		if (want != fails_with(r, EPERM))
			zdtm_fail("keyctl: %ld (%s)", r, strerror(errno));
		r = syscall(SYS_kexec_load, 0, 0, NULL, 0);
		if (want && !fails_with(r, EPERM))
			zdtm_fail("kexec_load: %ld (%s)", r, strerror(errno));
		r = escape(SYS_keyctl, 0);
		if (want != (r == -EPERM))
			zdtm_fail("keyctl from the vDSO's syscall: %ld", r);
	} else {
		long r = syscall(SYS_getppid);
		if (!fails_with(r, EXDEV))
			zdtm_fail("getppid: %ld (%s)", r, strerror(errno));
		r = escape(SYS_getppid, 0);
		if (r != -EXDEV)
			zdtm_fail("getppid from the vDSO's syscall: %ld", r);
	}
	pid_t p = fork();
	if (p < 0)
		zdtm_fail("fork: %s", strerror(errno));
	if (p == 0)
		_exit(7);
	int st;
	if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 7)
		zdtm_fail("fork+wait");
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	mode = argc > 1 ? argv[1] : "default";
	if (!strcmp(mode, "landlock")) {
		if (argc < 4)
			zdtm_fail("usage: sandboxed landlock RO_DIR RW_DIR");
		ro_dir = argv[2];
		rw_dir = argv[3];
	}
	target = vdso_syscall();
	struct sigaction sa = { 0 };
	sa.sa_sigaction = on_trap;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGTRAP, &sa, NULL);
	check();
	zdtm_ready();
	unsigned long n = 0;
	while (!zdtm_stop_requested()) {
		check();
		n++;
		zdtm_msleep(100);
	}
	printf("sandboxed %s: %lu checks\n", mode, n);
	zdtm_pass();
}
