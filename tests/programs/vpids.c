/* vpids: the pids a small tree sees stay the same across restarts.
 *
 *   vpids (parent) -> vp-child (own process group) -> vp-grandkid
 *
 * Each process prints "ids NAME pid P ppid Q pgid G sid S" once when it
 * starts and once at the end (after the stop file), and checks all the
 * time that getpid/getppid/getpgrp/getpgid/getsid/gettid (main thread)
 * are unchanged. The parent signals the child by its pid (kill) and the
 * child its own group (killpg) and the grandkid (kill); each counts what
 * it receives. At the end the parent stops the child with SIGTERM (the
 * child forwards it to the grandkid) and checks that waitpid returns the
 * pid fork returned, and the child the same for the grandkid. The parent
 * has a second thread that checks its own tid; at the end the main thread
 * signals it with pthread_kill and waits for its handler to run on it.
 * The parent also reaches the child, itself and its second thread by
 * their pids through sched_*, prlimit, get/setpriority, pidfd_open,
 * F_SETOWN/F_GETOWN(_EX) and /proc/PID paths (open, fopen, stat, lstat,
 * access, readlink, opendir, /proc/self/task/TID, and relative to a
 * directory fd of /proc, of /proc/self/task and of /proc/PID/task, and to
 * /proc as the working directory); the child and the
 * grandkid check si_pid of every SIGUSR1 (the sender is their parent; the
 * child sends the grandkid's by kill and by sigqueue in turn) and
 * the parent si_pid of SIGCHLD when the child exits; the grandkid takes
 * the child's SIGUSR2 with sigtimedwait and sigwaitinfo and checks its
 * si_pid.
 * Nothing here knows about checkpoints: run bare it passes the same way. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

static volatile sig_atomic_t usr1, usr2, term, stop_thread;
/* The pid SIGUSR1 must come from, the sender of a wrong one, the pid
 * SIGCHLD came from. */
static volatile pid_t usr1_from, usr1_bad, chld_from;
static volatile pid_t thread_tid;

static void on_usr1(int s, siginfo_t *si, void *ctx) {
    (void)s;
    (void)ctx;
    usr1++;
    if ((si->si_code == SI_USER || si->si_code == SI_QUEUE) && si->si_pid != usr1_from)
        usr1_bad = si->si_pid;
}
static void on_chld(int s, siginfo_t *si, void *ctx) {
    (void)s;
    (void)ctx;
    if (si->si_code == CLD_EXITED)
        chld_from = si->si_pid;
}
static void on_usr2(int s) {
    (void)s;
    if (gettid() == thread_tid)
        usr2++;
}

static void *second(void *arg) {
    (void)arg;
    pid_t me = gettid();
    thread_tid = me;
    while (!stop_thread) {
        if (gettid() != me || syscall(SYS_gettid) != me) {
            fprintf(stderr, "thread: tid %d -> %d\n", me, gettid());
            thread_tid = -1;
            return NULL;
        }
        zdtm_msleep(20);
    }
    return NULL;
}
static void on_term(int s) { (void)s; term = 1; }

struct ids { pid_t pid, ppid, pgid, sid, tid; };

static struct ids now(void) {
    struct ids i = { getpid(), getppid(), getpgrp(), getsid(0), gettid() };
    return i;
}

static void print(const char *when, const char *name, struct ids i) {
    printf("ids %s %s pid %d ppid %d pgid %d sid %d\n", when, name, i.pid, i.ppid, i.pgid, i.sid);
    fflush(stdout);
}

static void check(const char *name, struct ids a) {
    struct ids b = now();
    if (a.pid != b.pid || a.ppid != b.ppid || a.pgid != b.pgid || a.sid != b.sid || a.tid != b.tid ||
        getpgid(0) != a.pgid || getpgid(a.pid) != a.pgid || getsid(a.pid) != a.sid)
        zdtm_fail("%s: ids changed: pid %d->%d ppid %d->%d pgid %d->%d sid %d->%d tid %d->%d", name,
                  a.pid, b.pid, a.ppid, b.ppid, a.pgid, b.pgid, a.sid, b.sid, a.tid, b.tid);
}

static void handlers(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGUSR1, &sa, NULL);
    struct sigaction back;
    if (sigaction(SIGUSR1, NULL, &back) || back.sa_sigaction != on_usr1)
        zdtm_fail("sigaction does not read back the SIGUSR1 handler");
    sa.sa_sigaction = on_chld;
    sigaction(SIGCHLD, &sa, NULL);
    sa.sa_flags = 0;
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
}

static int grandkid(void) {
    prctl(PR_SET_NAME, "vp-grandkid");
    struct ids me = now();
    print("start", "grandkid", me);
    /* SIGUSR2 (from the child) is taken with sigtimedwait/sigwaitinfo. */
    sigset_t usr2_set;
    sigemptyset(&usr2_set);
    sigaddset(&usr2_set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &usr2_set, NULL);
    struct timespec zero = { 0, 0 };
    int took = 0;
    while (!term) {
        check("grandkid", me);
        siginfo_t si;
        memset(&si, 0, sizeof si);
        int s = (took & 1) ? sigtimedwait(&usr2_set, &si, &zero) : -1;
        sigset_t pending;
        if (s < 0 && !sigpending(&pending) && sigismember(&pending, SIGUSR2))
            s = sigwaitinfo(&usr2_set, &si);
        took++;
        if (s == SIGUSR2 && si.si_code == SI_USER && si.si_pid != usr1_from)
            zdtm_fail("grandkid: sigtimedwait/sigwaitinfo: SIGUSR2 from %d, not from %d",
                      si.si_pid, usr1_from);
        if (usr1_bad)
            zdtm_fail("grandkid: SIGUSR1 from %d, not from %d", usr1_bad, usr1_from);
        zdtm_msleep(20);
    }
    check("grandkid", me);
    print("end", "grandkid", me);
    return usr1 > 0 ? 0 : 4;
}

static int child(void) {
    prctl(PR_SET_NAME, "vp-child");
    if (setpgid(0, 0))
        zdtm_fail("child: setpgid");
    struct ids me = now();
    usr1_from = me.ppid;
    if (me.pgid != me.pid)
        zdtm_fail("child: pgid %d is not its pid %d", me.pgid, me.pid);
    print("start", "child", me);
    /* SIGUSR1 blocked until the grandkid knows it comes from us. */
    sigset_t usr1_set, was;
    sigemptyset(&usr1_set);
    sigaddset(&usr1_set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1_set, &was);
    pid_t g = fork();
    if (g < 0)
        zdtm_fail("child: fork");
    if (g == 0) {
        usr1_from = getppid();
        sigprocmask(SIG_SETMASK, &was, NULL);
        exit(grandkid());
    }
    sigprocmask(SIG_SETMASK, &was, NULL);
    long sends = 0;
    while (!term) {
        check("child", me);
        /* SIGUSR1 by kill and by sigqueue in turn (a value and si_pid). */
        union sigval v = { .sival_int = (int)sends };
        int sent = (sends++ & 1) ? sigqueue(g, SIGUSR1, v) : kill(g, SIGUSR1);
        if (sent || kill(g, SIGUSR2) || killpg(me.pgid, 0) || kill(-me.pgid, 0) || getpgid(g) != me.pgid ||
            getsid(g) != me.sid)
            zdtm_fail("child: the grandkid %d is not where it was", g);
        if (usr1_bad)
            zdtm_fail("child: SIGUSR1 from %d, not from %d", usr1_bad, usr1_from);
        zdtm_msleep(20);
    }
    check("child", me);
    print("end", "child", me);
    kill(g, SIGTERM);
    int st;
    pid_t w = waitpid(g, &st, 0);
    if (w != g || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child: waitpid gave %d (grandkid %d, status %#x)", w, g, st);
    return usr1 > 0 ? 0 : 5;
}

/* Reads the first line of a file into buf ("" when it cannot). */
static void first_line(const char *path, char *buf, size_t len) {
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (!fgets(buf, (int)len, f))
        buf[0] = 0;
    fclose(f);
}

/* The child c, the parent itself (me) and its second thread (tid), by
 * their pids, through the calls that take one. */
static void reach_by_pid(pid_t me, pid_t c, pid_t tid, int owned_fd) {
    cpu_set_t set;
    struct sched_param sp;
    struct rlimit rl;
    if (sched_getaffinity(c, sizeof set, &set) || sched_setaffinity(c, sizeof set, &set))
        zdtm_fail("parent: sched_get/setaffinity(%d): %s", c, strerror(errno));
    if (sched_getscheduler(c) != SCHED_OTHER || sched_getparam(c, &sp) ||
        sched_setparam(c, &sp) || sched_setscheduler(c, SCHED_OTHER, &sp))
        zdtm_fail("parent: sched_*(%d): %s", c, strerror(errno));
    if (prlimit(c, RLIMIT_NOFILE, NULL, &rl) || syscall(SYS_prlimit64, c, RLIMIT_NOFILE, NULL, &rl))
        zdtm_fail("parent: prlimit(%d): %s", c, strerror(errno));
    errno = 0;
    int prio = getpriority(PRIO_PROCESS, c);
    if (errno || setpriority(PRIO_PROCESS, c, prio) || (errno = 0, getpriority(PRIO_PGRP, c), errno))
        zdtm_fail("parent: get/setpriority(%d): %s", c, strerror(errno));
    int pfd = pidfd_open(c, 0);
    if (pfd < 0 && errno != ENOSYS)
        zdtm_fail("parent: pidfd_open(%d): %s", c, strerror(errno));
    if (pfd >= 0)
        close(pfd);
    if (fcntl(owned_fd, F_SETOWN, c) || fcntl(owned_fd, F_GETOWN) != c ||
        fcntl(owned_fd, F_SETOWN, -c) || fcntl(owned_fd, F_GETOWN) != -c)
        zdtm_fail("parent: F_SETOWN/F_GETOWN of %d: %d (%s)", c, fcntl(owned_fd, F_GETOWN),
                  strerror(errno));
    struct f_owner_ex ox = { F_OWNER_TID, tid }, back = { 0, 0 };
    if (fcntl(owned_fd, F_SETOWN_EX, &ox) || fcntl(owned_fd, F_GETOWN_EX, &back) ||
        back.type != F_OWNER_TID || back.pid != tid)
        zdtm_fail("parent: F_SETOWN_EX/F_GETOWN_EX of tid %d: %d (%s)", tid, back.pid,
                  strerror(errno));
    char path[128], line[128], link[256];
    struct stat st;
    snprintf(path, sizeof path, "/proc/%d/comm", c);
    first_line(path, line, sizeof line);
    if (strcmp(line, "vp-child\n"))
        zdtm_fail("parent: %s reads '%s'", path, line);
    int fd = open(path, O_RDONLY);
    if (fd < 0 || read(fd, line, sizeof line) != 9 || memcmp(line, "vp-child\n", 9))
        zdtm_fail("parent: open/read %s", path);
    close(fd);
    fd = openat(AT_FDCWD, path, O_RDONLY);
    if (fd < 0)
        zdtm_fail("parent: openat %s: %s", path, strerror(errno));
    close(fd);
    snprintf(path, sizeof path, "/proc/%d", c);
    if (stat(path, &st) || lstat(path, &st) || access(path, R_OK))
        zdtm_fail("parent: stat/lstat/access %s: %s", path, strerror(errno));
    snprintf(path, sizeof path, "/proc/%d/exe", me);
    ssize_t n = readlink(path, link, sizeof link - 1);
    if (n <= 0)
        zdtm_fail("parent: readlink %s: %s", path, strerror(errno));
    snprintf(path, sizeof path, "/proc/%d/task", me);
    DIR *d = opendir(path);
    if (!d)
        zdtm_fail("parent: opendir %s: %s", path, strerror(errno));
    closedir(d);
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    first_line(path, line, sizeof line);
    if (!line[0])
        zdtm_fail("parent: %s cannot be read", path);
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", me, tid);
    if (stat(path, &st))
        zdtm_fail("parent: stat %s: %s", path, strerror(errno));
    /* The same paths relative to directory fds. */
    int procfd = open("/proc", O_RDONLY | O_DIRECTORY);
    if (procfd < 0)
        zdtm_fail("parent: open /proc: %s", strerror(errno));
    snprintf(path, sizeof path, "%d/comm", c);
    fd = openat(procfd, path, O_RDONLY);
    if (fd < 0 || read(fd, line, sizeof line) != 9 || memcmp(line, "vp-child\n", 9))
        zdtm_fail("parent: openat(/proc, %s): %s", path, fd < 0 ? strerror(errno) : "not vp-child");
    close(fd);
    snprintf(path, sizeof path, "%d", c);
    if (fstatat(procfd, path, &st, 0) || faccessat(procfd, path, R_OK, 0))
        zdtm_fail("parent: fstatat/faccessat(/proc, %s): %s", path, strerror(errno));
    snprintf(path, sizeof path, "%d/exe", me);
    if (readlinkat(procfd, path, link, sizeof link - 1) <= 0)
        zdtm_fail("parent: readlinkat(/proc, %s): %s", path, strerror(errno));
    snprintf(path, sizeof path, "self/task/%d/stat", tid);
    if (fstatat(procfd, path, &st, 0))
        zdtm_fail("parent: fstatat(/proc, %s): %s", path, strerror(errno));
    snprintf(path, sizeof path, "/proc/%d/task", me);
    int tasks[2] = { open("/proc/self/task", O_RDONLY | O_DIRECTORY),
                     open(path, O_RDONLY | O_DIRECTORY) };
    for (int i = 0; i < 2; i++) {
        if (tasks[i] < 0)
            zdtm_fail("parent: open task directory %d: %s", i, strerror(errno));
        snprintf(path, sizeof path, "%d/stat", tid);
        if (fstatat(tasks[i], path, &st, 0))
            zdtm_fail("parent: fstatat(task directory %d, %s): %s", i, path, strerror(errno));
        close(tasks[i]);
    }
    /* And relative to /proc as the working directory. */
    int here = open(".", O_RDONLY | O_DIRECTORY);
    if (here < 0 || fchdir(procfd))
        zdtm_fail("parent: chdir /proc: %s", strerror(errno));
    snprintf(path, sizeof path, "%d/comm", c);
    fd = open(path, O_RDONLY);
    int err = errno;
    if (fchdir(here))
        zdtm_fail("parent: chdir back: %s", strerror(errno));
    if (fd < 0 || read(fd, line, sizeof line) != 9 || memcmp(line, "vp-child\n", 9))
        zdtm_fail("parent: open %s in /proc: %s", path, fd < 0 ? strerror(err) : "not vp-child");
    close(fd);
    close(here);
    close(procfd);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    handlers();
    struct ids me = now();
    print("start", "parent", me);
    pid_t c = fork();
    if (c < 0)
        zdtm_fail("fork");
    if (c == 0)
        exit(child());
    /* Until the child has its own group. */
    while (getpgid(c) != c)
        zdtm_msleep(5);
    pthread_t t;
    if (pthread_create(&t, NULL, second, NULL))
        zdtm_fail("pthread_create");
    while (!thread_tid)
        zdtm_msleep(5);
    int owned[2];
    if (pipe(owned))
        zdtm_fail("pipe");
    zdtm_ready();
    while (!zdtm_stop_requested()) {
        check("parent", me);
        reach_by_pid(me.pid, c, thread_tid, owned[0]);
        if (kill(c, SIGUSR1) || getpgid(c) != c || getsid(c) != me.sid)
            zdtm_fail("parent: the child %d is not where it was", c);
        zdtm_msleep(20);
    }
    check("parent", me);
    print("end", "parent", me);
    if (thread_tid < 0)
        zdtm_fail("parent: the second thread's tid changed");
    int err = pthread_kill(t, SIGUSR2);
    for (int i = 0; !err && !usr2 && i < 400; i++)
        zdtm_msleep(5);
    if (err || !usr2)
        zdtm_fail("parent: pthread_kill did not reach the second thread (%s)", strerror(err));
    stop_thread = 1;
    if (pthread_join(t, NULL))
        zdtm_fail("pthread_join");
    kill(c, SIGTERM);
    int st;
    pid_t w = waitpid(c, &st, 0);
    if (w != c || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("parent: waitpid gave %d (child %d, status %#x)", w, c, st);
    if (chld_from != c)
        zdtm_fail("parent: SIGCHLD from %d, not from the child %d", chld_from, c);
    zdtm_pass();
}
