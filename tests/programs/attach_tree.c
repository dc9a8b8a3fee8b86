/* attach_tree.c: process trees started outside dmtcp, for dmtcp-attach.
 *
 *   attach_tree [tree] LOG
 *     the parent streams numbered lines into a pipe to its child (own
 *     process group), which checks none is lost or duplicated; the child
 *     has a grandchild. Every process checks its pid; the child and the
 *     grandchild also their parent and group, and that they share their
 *     parent's session. (The parent's own parent and session are outside
 *     the attached tree: a restart puts it under dmtcp's nsinit, in the
 *     restarting tool's session.) After the stop file, the parent checks
 *     the child's exit status and the LOG records of both.
 *
 *   attach_tree daemon LOG
 *     daemonizes: the process started forks A, A calls setsid() and forks
 *     B (the worker, named attach_tree) and C (renamed at-writer); A exits,
 *     so B and C are reparented away (to init or a subreaper) and are only
 *     found through their session. C streams numbers into a pipe to B, B
 *     checks the sequence. The process started prints READY once B runs and
 *     exits 0; B prints PASS (to the inherited stdout) after the stop file. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

static int logfd;

static void record(char who, long n) {
    char b[32];
    int len = snprintf(b, sizeof b, "%c %ld\n", who, n);
    if (write(logfd, b, len) != len)
        zdtm_fail("write log");
}

static void check(int cond, const char *who, const char *what) {
    if (!cond)
        zdtm_fail("%s: %s changed (pid %d ppid %d pgid %d sid %d)", who, what, getpid(), getppid(),
                  getpgid(0), getsid(0));
}

static int grandkid(void) {
    prctl(PR_SET_NAME, "at-grandkid");
    pid_t pid = getpid(), ppid = getppid(), pgid = getpgid(0);
    while (!zdtm_stop_requested()) {
        check(getpid() == pid && getppid() == ppid && getpgid(0) == pgid, "grandkid", "ids");
        check(getsid(0) == getsid(getppid()), "grandkid", "session");
        zdtm_msleep(20);
    }
    return 0;
}

static int child(int rd) {
    prctl(PR_SET_NAME, "at-child");
    setpgid(0, 0);
    pid_t pid = getpid(), ppid = getppid(), pgid = getpgid(0);
    pid_t g = fork();
    if (g == 0)
        exit(grandkid());
    FILE *in = fdopen(rd, "r");
    long expect = 0, n;
    char line[64];
    while (fgets(line, sizeof line, in)) {
        if (!strcmp(line, "END\n"))
            break;
        n = atol(line);
        if (n != expect)
            zdtm_fail("child: got %ld, expected %ld", n, expect);
        expect++;
        if (n % 10 == 0)
            record('C', n);
        check(getpid() == pid && getppid() == ppid && getpgid(0) == pgid, "child", "ids");
        check(getsid(0) == getsid(getppid()), "child", "session");
    }
    int st;
    if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child: grandkid failed (%#x)", st);
    exit(expect > 0 ? 0 : 3);
}

static int tree(const char *log) {
    logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int p[2];
    if (logfd < 0 || pipe(p))
        zdtm_fail("setup");
    pid_t pid = getpid(), pgid = getpgid(0);
    pid_t c = fork();
    if (c == 0) {
        close(p[1]);
        child(p[0]);
    }
    close(p[0]);
    zdtm_ready();
    long n = 0, records = 0;
    char line[32];
    while (!zdtm_stop_requested()) {
        int len = snprintf(line, sizeof line, "%ld\n", n);
        if (write(p[1], line, len) != len)
            zdtm_fail("parent: write pipe");
        if (n % 10 == 0) {
            record('P', n);
            records++;
        }
        n++;
        check(getpid() == pid && getpgid(0) == pgid, "parent", "pid or group");
        if (n % 4 == 0)
            zdtm_msleep(5);
    }
    if (write(p[1], "END\n", 4) != 4)
        zdtm_fail("parent: write END");
    int st;
    if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child failed (%#x)", st);
    long child_records = (n + 9) / 10, lines = 0;
    FILE *f = fopen(log, "r");
    char buf[64];
    while (f && fgets(buf, sizeof buf, f))
        lines++;
    if (lines != records + child_records)
        zdtm_fail("log has %ld lines, expected %ld + %ld", lines, records, child_records);
    printf("parent: %ld numbers, %ld lines\n", n, lines);
    zdtm_pass();
}

static int daemon_writer(int wr) {
    prctl(PR_SET_NAME, "at-writer");
    pid_t pid = getpid();
    long n = 0;
    char line[32];
    while (!zdtm_stop_requested()) {
        int len = snprintf(line, sizeof line, "%ld\n", n++);
        if (write(wr, line, len) != len)
            zdtm_fail("writer: write pipe");
        check(getpid() == pid, "writer", "pid");
        if (n % 4 == 0)
            zdtm_msleep(5);
    }
    if (write(wr, "END\n", 4) != 4)
        zdtm_fail("writer: write END");
    return 0;
}

static int daemon_worker(int rd, int ready) {
    pid_t pid = getpid();
    FILE *in = fdopen(rd, "r");
    if (write(ready, "r", 1) != 1)
        zdtm_fail("worker: ready pipe");
    close(ready);
    long expect = 0, n;
    char line[64];
    while (fgets(line, sizeof line, in)) {
        if (!strcmp(line, "END\n"))
            break;
        n = atol(line);
        if (n != expect)
            zdtm_fail("worker: got %ld, expected %ld", n, expect);
        expect++;
        check(getpid() == pid, "worker", "pid");
    }
    if (expect == 0)
        zdtm_fail("worker: no number read");
    printf("worker: %ld numbers\n", expect);
    zdtm_pass();
}

static int daemonize(void) {
    int ready[2];
    if (pipe(ready))
        zdtm_fail("pipe");
    pid_t a = fork();
    if (a == 0) {
        close(ready[0]);
        if (setsid() < 0)
            zdtm_fail("setsid");
        int p[2];
        if (pipe(p))
            zdtm_fail("pipe");
        if (fork() == 0) {
            close(p[0]);
            close(ready[1]);
            exit(daemon_writer(p[1]));
        }
        if (fork() == 0) {
            close(p[1]);
            exit(daemon_worker(p[0], ready[1]));
        }
        _exit(0);
    }
    close(ready[1]);
    int st;
    if (waitpid(a, &st, 0) != a || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("daemonizing process failed (%#x)", st);
    char c;
    if (read(ready[0], &c, 1) != 1)
        zdtm_fail("the worker never started");
    zdtm_ready();
    return 0;
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    if (argc == 2)
        return tree(argv[1]);
    if (argc < 3)
        zdtm_fail("usage: attach_tree [tree|daemon] LOG");
    if (!strcmp(argv[1], "tree"))
        return tree(argv[2]);
    if (!strcmp(argv[1], "daemon"))
        return daemonize();
    zdtm_fail("unknown mode %s", argv[1]);
}
