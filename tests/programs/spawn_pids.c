/* spawn_pids: children made by posix_spawn, system and popen without
 * namespaces never get a pid that names another process of the program.
 *
 * The parent has a child that sleeps. Every few milliseconds it spawns
 * /bin/true with posix_spawn (and, in turn, runs `true` with system and
 * reads `echo x` through popen), and checks that the spawned pid is none
 * of the pids it knows (its own, its parent's, its child's), that waitpid
 * of it gives its exit status, and that its child still answers to its
 * pid. It prints "ids child N" so that the test can make the kernel's
 * next pid the child's virtual pid after a restart (when its kernel pid is
 * another one), as a pid wrap would.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

extern char **environ;

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    pid_t me = getpid(), parent = getppid();
    pid_t child = fork();
    if (child < 0)
        zdtm_fail("fork");
    if (child == 0) {
        for (;;)
            pause();
    }
    printf("ids child %d\n", child);
    fflush(stdout);
    zdtm_ready();
    unsigned long n = 0;
    while (!zdtm_stop_requested()) {
        pid_t p;
        char *args[] = { "true", NULL };
        int err = posix_spawn(&p, "/bin/true", NULL, NULL, args, environ);
        if (err)
            zdtm_fail("posix_spawn: %s", strerror(err));
        if (p == me || p == parent || p == child)
            zdtm_fail("posix_spawn gave pid %d, which is also %s", p,
                      p == me ? "mine" : p == parent ? "my parent's" : "my child's");
        int st;
        pid_t w = waitpid(p, &st, 0);
        if (w != p || !WIFEXITED(st) || WEXITSTATUS(st))
            zdtm_fail("waitpid(%d) gave %d, status %#x", p, w, st);
        if (n % 8 == 0) {
            int r = system("true");
            if (r != 0)
                zdtm_fail("system(\"true\") gave %#x", r);
            FILE *f = popen("echo x", "r");
            char line[16] = "";
            if (!f || !fgets(line, sizeof line, f) || strcmp(line, "x\n") || pclose(f))
                zdtm_fail("popen(\"echo x\") read '%s'", line);
        }
        if (kill(child, 0) || waitpid(child, &st, WNOHANG) != 0)
            zdtm_fail("my child %d does not answer: %s", child, strerror(errno));
        n++;
        zdtm_msleep(5);
    }
    kill(child, SIGKILL);
    int st;
    if (waitpid(child, &st, 0) != child || !WIFSIGNALED(st))
        zdtm_fail("waitpid of my child %d", child);
    printf("spawned %lu\n", n);
    zdtm_pass();
}
