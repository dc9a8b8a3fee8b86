// no_userns: runs a command on what looks like a machine that forbids user
// namespaces to ordinary users, without changing the real machine.
//
// As root: a child enters a new user namespace with a wide id map
// (0-65535 mapped to themselves), writes 0 to that namespace's
// /proc/sys/user/max_user_namespaces, drops to uid/gid 65534 with no
// supplementary groups and no capabilities, and executes argv[1...].
// Inside, creating a user namespace fails with ENOSPC exactly as on a
// cluster with user.max_user_namespaces = 0. Exits with the command's
// status (127 when it cannot be run, 125 when the setup failed).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: no_userns COMMAND [ARGS...]\n");
        return 125;
    }
    int to_parent[2], to_child[2];
    if (pipe(to_parent) || pipe(to_child)) { perror("pipe"); return 125; }
    pid_t c = fork();
    if (c < 0) { perror("fork"); return 125; }
    if (c == 0) {
        char b;
        if (unshare(CLONE_NEWUSER)) { perror("no_userns: unshare"); _exit(125); }
        if (write(to_parent[1], "u", 1) != 1) _exit(125);
        if (read(to_child[0], &b, 1) != 1 || b != 'm') _exit(125);
        if (write_file("/proc/sys/user/max_user_namespaces", "0\n")) {
            perror("no_userns: max_user_namespaces");
            _exit(125);
        }
        if (setgroups(0, NULL) || setgid(65534) || setuid(65534)) {
            perror("no_userns: dropping to uid 65534");
            _exit(125);
        }
        execvp(argv[1], argv + 1);
        fprintf(stderr, "no_userns: %s: %s\n", argv[1], strerror(errno));
        _exit(127);
    }
    char b, path[64];
    if (read(to_parent[0], &b, 1) != 1) return 125;
    snprintf(path, sizeof path, "/proc/%d/uid_map", c);
    if (write_file(path, "0 0 65536\n")) { perror("no_userns: uid_map"); return 125; }
    snprintf(path, sizeof path, "/proc/%d/gid_map", c);
    if (write_file(path, "0 0 65536\n")) { perror("no_userns: gid_map"); return 125; }
    if (write(to_child[1], "m", 1) != 1) return 125;
    int st;
    if (waitpid(c, &st, 0) < 0) { perror("waitpid"); return 125; }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
