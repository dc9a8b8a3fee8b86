/* tree.c: a process tree across checkpoint/restart.
 *   tree (parent) --pipe--> tree-child (own process group) --> tree-grandkid
 * - the parent streams numbered lines into a pipe; the child checks none is
 *   lost or duplicated (data in flight in the pipe survives);
 * - parent and child append records through ONE inherited fd (shared open
 *   file description): afterwards the file holds every record, none
 *   overwritten, so the shared offset survived;
 * - every process checks its pid, parent pid, process group and session;
 * - at the end the child and grandchild exit 0 and are reaped by waitpid. */
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
static long records;

static void record(char who, long n) {
    char b[32];
    int len = snprintf(b, sizeof b, "%c %ld\n", who, n);
    if (write(logfd, b, len) != len)
        zdtm_fail("write log");
    records++;
}

static void check_ids(pid_t pid, pid_t ppid, pid_t pgid, pid_t sid, const char *who) {
    if (getpid() != pid || getppid() != ppid || getpgid(0) != pgid || getsid(0) != sid)
        zdtm_fail("%s: ids %d/%d/%d/%d became %d/%d/%d/%d", who, pid, ppid, pgid, sid, getpid(),
                  getppid(), getpgid(0), getsid(0));
}

static int grandkid(void) {
    prctl(PR_SET_NAME, "tree-grandkid");
    pid_t pid = getpid(), ppid = getppid(), pgid = getpgid(0), sid = getsid(0);
    while (!zdtm_stop_requested()) {
        check_ids(pid, ppid, pgid, sid, "grandkid");
        zdtm_msleep(20);
    }
    return 0;
}

static int child(int rd) {
    prctl(PR_SET_NAME, "tree-child");
    setpgid(0, 0);
    pid_t pid = getpid(), ppid = getppid(), pgid = getpgid(0), sid = getsid(0);
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
        check_ids(pid, ppid, pgid, sid, "child");
    }
    int st;
    if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child: grandkid failed (%#x)", st);
    printf("child: %ld numbers, %ld records\n", expect, records);
    exit(expect > 0 ? 0 : 3);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    if (argc < 2)
        zdtm_fail("usage: tree LOGFILE");
    logfd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int p[2];
    if (logfd < 0 || pipe(p))
        zdtm_fail("setup");
    pid_t pid = getpid(), ppid = getppid(), pgid = getpgid(0), sid = getsid(0);
    pid_t c = fork();
    if (c == 0) {
        close(p[1]);
        child(p[0]);
    }
    close(p[0]);
    zdtm_ready();
    long n = 0;
    char line[32];
    while (!zdtm_stop_requested()) {
        int len = snprintf(line, sizeof line, "%ld\n", n);
        if (write(p[1], line, len) != len)
            zdtm_fail("parent: write pipe");
        if (n % 10 == 0)
            record('P', n);
        n++;
        check_ids(pid, ppid, pgid, sid, "parent");
        if (n % 4 == 0)
            zdtm_msleep(5);
    }
    if (write(p[1], "END\n", 4) != 4)
        zdtm_fail("parent: write END");
    int st;
    if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child failed (%#x)", st);
    /* Every record of both processes is in the file: the offset was shared. */
    long child_records = (n + 9) / 10, lines = 0;
    FILE *f = fopen(argv[1], "r");
    char buf[64];
    while (f && fgets(buf, sizeof buf, f))
        lines++;
    if (lines != records + child_records)
        zdtm_fail("log has %ld lines, expected %ld + %ld", lines, records, child_records);
    printf("parent: %ld numbers, %ld lines\n", n, lines);
    zdtm_pass();
}
