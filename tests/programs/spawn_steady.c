/* spawn_steady: children made without pause by vfork, posix_spawn,
 * system and popen, while checkpoints come at any moment (without
 * namespaces the hard cases: a child caught in the middle of its exec,
 * before its inject library started; the parent caught on its way out of
 * glibc's clone, or blocked in glibc's own wait of `system` or `pclose`,
 * which compare what the wait returns with the pid they kept).
 *
 * Each round: /bin/true by vfork+execve and by posix_spawn, each reaped
 * with waitpid (the pid back and status 0); system("sleep 0.02") and
 * system("true") must return 0. A stream opened by popen at the start
 * (writing to `cat`) lives through every
 * restart and is closed at the end: pclose must return 0 (glibc waits
 * for the pid the child had at its birth). PASS when told to stop, with
 * the number of rounds.
 *
 * With argv[1] "popen-reads", each round is only popen("echo x"), one
 * line read ("x") and pclose (0): checkpoints find the child running, a
 * zombie whose output the parent has not read yet, or reaped. And a pipe
 * a child wrote "early" into and exited before the first checkpoint is
 * read only at the end: "early", then the end of the pipe (every
 * checkpoint finds its read end with bytes in flight and no writer).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

extern char **environ;

static void reap(pid_t p, const char *how) {
    int st;
    pid_t w = waitpid(p, &st, 0);
    if (w != p || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("%s: waitpid(%d) gave %d (%s), status %#x", how, p, w,
                  w < 0 ? strerror(errno) : "-", st);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    FILE *kept = popen("cat > /dev/null", "w");
    if (!kept)
        zdtm_fail("popen: %s", strerror(errno));
    zdtm_ready();
    char *args[] = { "true", NULL };
    unsigned long n = 0;
    int popen_reads = argc > 1 && strcmp(argv[1], "popen-reads") == 0;
    int early[2] = { -1, -1 };
    if (popen_reads) {
        if (pipe(early))
            zdtm_fail("pipe: %s", strerror(errno));
        pid_t w = fork();
        if (w == 0) {
            _exit(write(early[1], "early\n", 6) == 6 ? 0 : 1);
        }
        close(early[1]);
        reap(w, "the early writer");
    }
    while (popen_reads && !zdtm_stop_requested()) {
        FILE *f = popen("echo x", "r");
        if (!f)
            zdtm_fail("popen: %s", strerror(errno));
        char line[16] = "";
        if (!fgets(line, sizeof line, f) || strcmp(line, "x\n"))
            zdtm_fail("popen read \"%s\"", line);
        int st = pclose(f);
        if (st != 0)
            zdtm_fail("pclose gave %d (%s)", st, st < 0 ? strerror(errno) : "-");
        n++;
    }
    while (!popen_reads && !zdtm_stop_requested()) {
        pid_t v = vfork();
        if (v == 0) {
            execve("/bin/true", args, environ);
            _exit(127);
        }
        if (v < 0)
            zdtm_fail("vfork: %s", strerror(errno));
        reap(v, "vfork");
        pid_t p;
        int err = posix_spawn(&p, "/bin/true", NULL, NULL, args, environ);
        if (err)
            zdtm_fail("posix_spawn: %s", strerror(err));
        reap(p, "posix_spawn");
        const char *cmd = n % 2 ? "true" : "sleep 0.02";
        int st = system(cmd);
        if (st != 0)
            zdtm_fail("system(\"%s\") gave %d (%s)", cmd, st, st < 0 ? strerror(errno) : "-");
        if (fprintf(kept, "%lu\n", n) < 0 || fflush(kept))
            zdtm_fail("writing to the kept popen stream: %s", strerror(errno));
        n++;
    }
    if (popen_reads) {
        char buf[16] = "";
        ssize_t got = read(early[0], buf, sizeof buf - 1);
        ssize_t end = got == 6 ? read(early[0], buf + 6, 1) : -2;
        if (got != 6 || strncmp(buf, "early\n", 6) || end != 0)
            zdtm_fail("the early pipe gave %zd bytes \"%s\" (%s), then %zd", got, buf,
                      got < 0 ? strerror(errno) : "-", end);
    }
    int st = pclose(kept);
    if (st != 0)
        zdtm_fail("pclose of the kept stream gave %d (%s)", st, st < 0 ? strerror(errno) : "-");
    printf("rounds: %lu\n", n);
    zdtm_pass();
}
