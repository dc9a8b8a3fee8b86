/* spawn_pids: children made by posix_spawn, vfork, system and popen
 * without namespaces never get a pid that names another process of the
 * program.
 *
 * The parent has a child that sleeps. On each SIGUSR1 it makes a burst of
 * children: /bin/true by posix_spawn and by vfork+execve (and, in turn,
 * `true` by system and `echo x` read through popen), and checks that
 * each new pid is none
 * of the pids it knows (its own, its parent's, its child's), that waitpid
 * of it gives its exit status, and that its child still answers to its
 * pid; then it prints "burst N done". It prints "ids child N" at start so
 * that the test can make the kernel's next pid the child's virtual pid
 * after a restart (when its kernel pid is another one), as a pid wrap
 * would, before it asks for a burst. (Bursts, not a steady stream: a
 * checkpoint that catches a child in the middle of its exec is another
 * matter, not this test's.)
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

static volatile sig_atomic_t bursts_asked;
static void on_usr1(int s) {
    (void)s;
    bursts_asked++;
}

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
    signal(SIGUSR1, on_usr1);
    printf("ids child %d\n", child);
    fflush(stdout);
    zdtm_ready();
    unsigned long n = 0;
    int bursts = 0;
    while (!zdtm_stop_requested()) {
        if (bursts == bursts_asked) {
            zdtm_msleep(5);
            continue;
        }
        for (int i = 0; i < 40; i++, n++) {
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
            pid_t v = vfork();
            if (v == 0) {
                execve("/bin/true", args, environ);
                _exit(127);
            }
            if (v < 0)
                zdtm_fail("vfork: %s", strerror(errno));
            if (v == me || v == parent || v == child)
                zdtm_fail("vfork gave pid %d, which is also %s", v,
                          v == me ? "mine" : v == parent ? "my parent's" : "my child's");
            if (waitpid(v, &st, 0) != v || !WIFEXITED(st) || WEXITSTATUS(st))
                zdtm_fail("waitpid(%d) of the vfork child: status %#x", v, st);
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
        }
        printf("burst %d done\n", ++bursts);
        fflush(stdout);
    }
    kill(child, SIGKILL);
    int st;
    if (waitpid(child, &st, 0) != child || !WIFSIGNALED(st))
        zdtm_fail("waitpid of my child %d", child);
    printf("spawned %lu\n", n);
    zdtm_pass();
}
