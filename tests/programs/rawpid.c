/* rawpid.c: pids through the `syscall` instruction itself (inline asm, not
 * libc), compared with libc's, all the time and across restarts.
 *
 * Every loop: getpid, gettid and getppid made with the raw instruction
 * equal libc's and the values seen at start (the program's virtual pids
 * survive restarts); kill(self, 0) and tgkill(self, self, 0) through the
 * raw instruction succeed, and a raw tgkill(self, self, SIGUSR1) reaches
 * the program's handler; a second thread checks its own tid the same way
 * (raw gettid, raw tgkill 0). A raw rt_tgsigqueueinfo(self, self, SIGUSR1)
 * with SI_QUEUE reaches the handler too, and a raw rt_sigqueueinfo(self, 0)
 * finds the process. Prints "raw start PID TID PPID" once ready and
 * "raw end ..." before PASS (the test compares them).
 *
 * With --own-filter the program first installs a seccomp filter of its
 * own (through libc's prctl, no_new_privs set) that traps `acct` with its
 * own SIGSYS handler, which answers 4242: every loop checks that its
 * filter and handler still work.
 *
 * With --raw-sigsys the same, but its SIGSYS handler is installed with a
 * raw rt_sigaction (inline asm, a restorer of its own) before the first
 * checkpoint, when nothing traps that call; every tenth loop it reads its
 * action back and sets it again the same way: the handler must be its
 * own each time.
 *
 * With --sigset-sigsys the same, but its SIGSYS handler is a plain one
 * (it counts the traps; the trapped acct then returns its own number) set with
 * sigset(), and every tenth loop set again with bsd_signal() or sigset()
 * in turn, each of which must give back that handler as the previous one:
 * glibc makes both through its own internal sigaction, which the preload
 * does not see.
 *
 * With --exec the program also keeps one child alive that it forked and
 * that exec'd this program again (--child: for 200 ms, raw getpid and
 * gettid equal libc's and raw kill(self, 0) works, exit 0): after a
 * restart such a child runs under the trap filter it inherited, and
 * checkpoints catch some of them. The parent reaps each with a raw
 * waitid(P_PID, child) (the child alive at a checkpoint is reaped after
 * the restart by its old pid) and checks its pid and exit status.
 *
 * Statically linked (rawpid_static) it runs the same checks; without the
 * inject library nothing translates its raw calls after a restart without
 * namespaces. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "zdtm.h"

/* sigset() is deprecated, and still what old programs call. */
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"

static long raw0(long nr) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr) : "rcx", "r11", "memory");
    return r;
}

static long raw5(long nr, long a, long b, long c, long d, long e) {
    long r;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return r;
}

static long raw3(long nr, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(nr), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return r;
}

static volatile sig_atomic_t usr1, own_traps;

static void on_usr1(int sig) {
    (void)sig;
    usr1++;
}

static void on_sigsys(int sig, siginfo_t *si, void *ctx) {
    (void)sig;
    ucontext_t *uc = ctx;
    if (si->si_code == 1 /* SYS_SECCOMP */ && si->si_errno == 0x1234 && si->si_syscall == SYS_acct) {
        own_traps++;
        uc->uc_mcontext.gregs[REG_RAX] = 4242;
    }
}

/* A restorer of our own (rt_sigreturn), for raw rt_sigaction. */
__attribute__((naked)) static void own_restorer(void) {
    __asm__ volatile("mov $15, %eax\n\tsyscall\n\thlt");
}

/* The kernel's struct sigaction (x86-64). */
struct ksigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    unsigned long mask;
};

static int raw_sigsys, sigset_sigsys;

/* Not declared by every glibc. */
extern __sighandler_t bsd_signal(int, __sighandler_t);

static void on_sigsys_plain(int sig) {
    (void)sig;
    own_traps++;
}

/* rt_sigaction(SIGSYS) through the instruction itself: sets our handler
 * (set) or reads the action into *old. */
static long raw_sigaction_sigsys(int set, struct ksigaction *old) {
    struct ksigaction k = {(void *)on_sigsys, SA_SIGINFO | 0x04000000 /* SA_RESTORER */,
                           (void *)own_restorer, 0};
    return raw5(SYS_rt_sigaction, SIGSYS, set ? (long)&k : 0, (long)old, 8, 0);
}

static void own_filter(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_acct, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP | 0x1234),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    if (raw_sigsys) {
        long r = raw_sigaction_sigsys(1, NULL);
        if (r)
            zdtm_fail("raw rt_sigaction SIGSYS: %ld", r);
    } else if (sigset_sigsys) {
        if (sigset(SIGSYS, on_sigsys_plain) == SIG_ERR)
            zdtm_fail("sigset SIGSYS: %s", strerror(errno));
    } else if (sigaction(SIGSYS, &sa, NULL))
        zdtm_fail("sigaction SIGSYS: %s", strerror(errno));
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        zdtm_fail("no_new_privs: %s", strerror(errno));
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
        zdtm_fail("own filter: %s", strerror(errno));
}

static pid_t pid0, tid0, ppid0;
static int own;
static long checks;

static void check(void) {
    long pid = raw0(SYS_getpid), tid = raw0(SYS_gettid), ppid = raw0(SYS_getppid);
    if (pid != getpid() || tid != gettid() || ppid != getppid())
        zdtm_fail("raw getpid/gettid/getppid %ld/%ld/%ld, libc %d/%d/%d", pid, tid, ppid,
                  getpid(), gettid(), getppid());
    if (pid != pid0 || tid != tid0 || ppid != ppid0)
        zdtm_fail("raw getpid/gettid/getppid %ld/%ld/%ld, at start %d/%d/%d", pid, tid, ppid,
                  pid0, tid0, ppid0);
    long k = raw3(SYS_kill, pid, 0, 0);
    if (k != 0)
        zdtm_fail("raw kill(%ld, 0): %ld", pid, k);
    k = raw3(SYS_tgkill, pid, tid, 0);
    if (k != 0)
        zdtm_fail("raw tgkill(%ld, %ld, 0): %ld", pid, tid, k);
    sig_atomic_t before = usr1;
    k = raw3(SYS_tgkill, pid, tid, SIGUSR1);
    if (k != 0 || usr1 != before + 1)
        zdtm_fail("raw tgkill(%ld, %ld, SIGUSR1): %ld, handler ran %d times", pid, tid, k,
                  (int)(usr1 - before));
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = SIGUSR1;
    si.si_code = SI_QUEUE;
    si.si_pid = pid;
    si.si_uid = getuid();
    before = usr1;
    k = raw5(SYS_rt_tgsigqueueinfo, pid, tid, SIGUSR1, (long)&si, 0);
    if (k != 0 || usr1 != before + 1)
        zdtm_fail("raw rt_tgsigqueueinfo(%ld, %ld, SIGUSR1): %ld, handler ran %d times", pid, tid,
                  k, (int)(usr1 - before));
    si.si_signo = 0;
    k = raw3(SYS_rt_sigqueueinfo, pid, 0, (long)&si);
    if (k != 0)
        zdtm_fail("raw rt_sigqueueinfo(%ld, 0): %ld", pid, k);
    if (raw_sigsys && checks++ % 10 == 0) {
        struct ksigaction old;
        memset(&old, 0, sizeof old);
        long r = raw_sigaction_sigsys(0, &old);
        if (r || old.handler != (void *)on_sigsys)
            zdtm_fail("raw rt_sigaction(SIGSYS) read back: %ld, handler %p, mine %p", r,
                      old.handler, (void *)on_sigsys);
        if ((r = raw_sigaction_sigsys(1, NULL)))
            zdtm_fail("raw rt_sigaction(SIGSYS) set again: %ld", r);
    }
    if (sigset_sigsys && checks++ % 10 == 0) {
        int bsd = checks % 20 == 1;
        __sighandler_t old = bsd ? bsd_signal(SIGSYS, on_sigsys_plain) : sigset(SIGSYS, on_sigsys_plain);
        if (old != on_sigsys_plain)
            zdtm_fail("%s(SIGSYS) gave back %p, mine %p", bsd ? "bsd_signal" : "sigset", (void *)old,
                      (void *)on_sigsys_plain);
    }
    if (own && sigset_sigsys) {
        sig_atomic_t t = own_traps;
        /* A trapped call whose handler sets no result returns what the
         * kernel left in rax: the call's number. */
        long r = syscall(SYS_acct, NULL);
        if (r != SYS_acct || own_traps != t + 1)
            zdtm_fail("own filter: acct gave %ld, own plain handler ran %d times", r,
                      (int)(own_traps - t));
    } else if (own) {
        sig_atomic_t t = own_traps;
        long r = syscall(SYS_acct, NULL);
        if (r != 4242 || own_traps != t + 1)
            zdtm_fail("own filter: acct gave %ld, own handler ran %d times", r,
                      (int)(own_traps - t));
    }
}

/* The second thread: its tid through the instruction, all the time. */
static volatile int thread_bad, thread_stop;
static volatile long thread_loops;
static char thread_why[256];

static void *second(void *arg) {
    (void)arg;
    pid_t tid0 = gettid();
    while (!thread_stop) {
        long tid = raw0(SYS_gettid), pid = raw0(SYS_getpid);
        long k = raw3(SYS_tgkill, pid, tid, 0);
        if (tid != tid0 || tid != gettid() || k != 0) {
            snprintf(thread_why, sizeof thread_why, "thread: raw gettid %ld, at start %d, libc %d; tgkill 0: %ld",
                     tid, tid0, gettid(), k);
            thread_bad = 1;
            break;
        }
        thread_loops++;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* --child: the exec'd child's checks. */
static int child_main(void) {
    /* Another name: the harness looks for the program by its name. */
    prctl(PR_SET_NAME, "rawpid-child", 0, 0, 0);
    for (int i = 0; i < 10; i++) {
        if (raw0(SYS_getpid) != getpid() || raw0(SYS_gettid) != gettid())
            return 3;
        if (raw3(SYS_kill, getpid(), 0, 0) != 0)
            return 4;
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static char self[4096];
static pid_t child;
static long children;

/* --exec: one child at a time, forked and exec'd again. */
static void exec_child(void) {
    if (child > 0) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        long w = raw5(SYS_waitid, P_PID, child, (long)&si, WEXITED | WNOHANG, 0);
        if (w < 0)
            zdtm_fail("raw waitid(P_PID, %d): %ld", child, w);
        if (si.si_pid == 0)
            return;
        if (si.si_pid != child || si.si_code != CLD_EXITED || si.si_status != 0)
            zdtm_fail("exec'd child %d: raw waitid gave pid %d, code %d, status %d", child,
                      si.si_pid, si.si_code, si.si_status);
        children++;
    }
    child = fork();
    if (child < 0)
        zdtm_fail("fork: %s", strerror(errno));
    if (child == 0) {
        execl(self, self, "--child", (char *)NULL);
        _exit(127);
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--child") == 0)
        return child_main();
    zdtm_init(argc, argv);
    raw_sigsys = argc > 1 && strcmp(argv[1], "--raw-sigsys") == 0;
    sigset_sigsys = argc > 1 && strcmp(argv[1], "--sigset-sigsys") == 0;
    own = raw_sigsys || sigset_sigsys || (argc > 1 && strcmp(argv[1], "--own-filter") == 0);
    int exec_mode = argc > 1 && strcmp(argv[1], "--exec") == 0;
    if (exec_mode && !realpath(argv[0], self))
        zdtm_fail("realpath %s: %s", argv[0], strerror(errno));
    signal(SIGUSR1, on_usr1);
    if (own)
        own_filter();
    pthread_t th;
    if (pthread_create(&th, NULL, second, NULL))
        zdtm_fail("pthread_create");
    pid0 = getpid();
    tid0 = gettid();
    ppid0 = getppid();
    check();
    printf("raw start %d %d %d\n", pid0, tid0, ppid0);
    fflush(stdout);
    zdtm_ready();
    long loops = 0;
    while (!zdtm_stop_requested()) {
        check();
        if (thread_bad)
            zdtm_fail("%s", thread_why);
        if (exec_mode)
            exec_child();
        loops++;
        zdtm_msleep(20);
    }
    check();
    thread_stop = 1;
    if (pthread_join(th, NULL))
        zdtm_fail("pthread_join");
    if (thread_bad)
        zdtm_fail("%s", thread_why);
    if (exec_mode && child > 0) {
        int st;
        if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            zdtm_fail("exec'd child %d: status %#x", child, st);
        children++;
        printf("children: %ld\n", children);
    }
    printf("raw end %ld %ld %ld\n", raw0(SYS_getpid), raw0(SYS_gettid), raw0(SYS_getppid));
    printf("loops: %ld\n", loops);
    zdtm_pass();
}
