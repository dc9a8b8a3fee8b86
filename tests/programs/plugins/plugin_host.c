/* plugin_host: the program the plugin tests run (tests/tests/plugins.rs).
 *   plugin_host tree   forks a child that execs `plugin_host leaf`; both
 *                      run until $ZDTM_STOP exists; the parent reaps it.
 *   plugin_host pair   forks a child (no exec); both run until the stop file.
 *   plugin_host threads starts a thread that returns and joins it, then one
 *                      that calls pthread_exit and joins it, prints
 *                      "threads 42 43", then runs like `single`.
 *   plugin_host single runs until the stop file; every 10 ms it stores its
 *                      tick count in ./ticks (so a test sees it running).
 *   plugin_host sleep  calls sleep(0) (wrapped by the sleep plugins), then
 *                      prints "slept" and exits.
 *   plugin_host sync   calls sync() (the ckpt_on_sync plugin checkpoints)
 *                      and prints "synced", then runs like `single`.
 *   plugin_host txn    runs "transactions" (a++, 20 ms, b++) between
 *                      safe_point_begin() and safe_point_end() (weak: the
 *                      safe_point plugin's) until the stop file, then
 *                      prints "a=N b=N".
 *   plugin_host closefrom does what OpenSSH's client does at start: closes
 *                      every fd above 2 (close_range), then puts one end of
 *                      a socketpair on every fd number it had open before
 *                      (where a tool that kept using its old numbers would
 *                      meet the program's sockets), and until the stop file
 *                      sends a counter both ways through each pair, checking
 *                      every byte; prints "closefrom ok N" (N rounds) or
 *                      "closefrom FAIL ..." and exits 1.
 * Nothing here knows about plugins: they are loaded by dmtcp-run. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

void safe_point_begin(void) __attribute__((weak));
void safe_point_end(void) __attribute__((weak));

static int stop_requested(void)
{
  const char *p = getenv("ZDTM_STOP");
  return p != NULL && access(p, F_OK) == 0;
}

static void run_until_stop(int ticks)
{
  unsigned long n = 0;
  int fd = ticks ? open("ticks", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
  while (!stop_requested()) {
    usleep(10000);
    n++;
    if (fd >= 0) {
      char b[32];
      int len = snprintf(b, sizeof b, "%020lu\n", n);
      if (pwrite(fd, b, (size_t)len, 0) != len) {
        perror("pwrite");
        exit(1);
      }
    }
  }
}

static void *returns(void *arg)
{
  return (void *)((uintptr_t)arg + 1);
}

static void *exits(void *arg)
{
  pthread_exit((void *)((uintptr_t)arg + 2));
}

/* Reads 8 bytes from fd within 5 s: 0 on success. */
static int read8(int fd, uint64_t *v)
{
  size_t got = 0;
  while (got < sizeof *v) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, 5000) != 1) {
      return -1;
    }
    ssize_t n = read(fd, (char *)v + got, sizeof *v - got);
    if (n <= 0) {
      return -1;
    }
    got += (size_t)n;
  }
  return 0;
}

static int closefrom_mode(void)
{
  int old[64], n_old = 0;
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL) {
    perror("opendir");
    return 1;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL && n_old < 64) {
    int fd = atoi(e->d_name);
    if (fd > 2 && fd != dirfd(d)) {
      old[n_old++] = fd;
    }
  }
  closedir(d);
  if (syscall(SYS_close_range, 3U, ~0U, 0) != 0) {
    perror("close_range");
    return 1;
  }
  int peer[64];
  for (int i = 0; i < n_old; i++) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
      perror("socketpair");
      return 1;
    }
    peer[i] = fcntl(sv[1], F_DUPFD, 100);
    close(sv[1]);
    if (sv[0] != old[i]) {
      if (dup2(sv[0], old[i]) != old[i]) {
        perror("dup2");
        return 1;
      }
      close(sv[0]);
    }
  }
  int ticks = open("ticks", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  uint64_t round = 0;
  while (!stop_requested()) {
    round++;
    for (int i = 0; i < n_old; i++) {
      uint64_t there = 0, back = 0, want = round * 1000 + (uint64_t)i;
      if (write(old[i], &want, sizeof want) != sizeof want || read8(peer[i], &there) != 0 ||
          write(peer[i], &there, sizeof there) != sizeof there || read8(old[i], &back) != 0 ||
          there != want || back != want) {
        printf("closefrom FAIL: fd %d round %lu: sent %lu, got %lu there, %lu back\n", old[i],
               (unsigned long)round, (unsigned long)want, (unsigned long)there,
               (unsigned long)back);
        return 1;
      }
    }
    char t[32];
    int len = snprintf(t, sizeof t, "%020lu\n", (unsigned long)round);
    if (ticks >= 0 && pwrite(ticks, t, (size_t)len, 0) != len) {
      perror("pwrite");
      return 1;
    }
    usleep(10000);
  }
  printf("closefrom ok %lu (%d fds)\n", (unsigned long)round, n_old);
  return 0;
}

int main(int argc, char **argv)
{
  const char *mode = argc > 1 ? argv[1] : "single";
  if (strcmp(mode, "closefrom") == 0) {
    return closefrom_mode();
  }
  if (strcmp(mode, "sleep") == 0) {
    sleep(0);
    printf("slept\n");
    return 0;
  }
  if (strcmp(mode, "leaf") == 0 || strcmp(mode, "single") == 0) {
    run_until_stop(strcmp(mode, "single") == 0);
    return 0;
  }
  if (strcmp(mode, "threads") == 0) {
    pthread_t t;
    void *r1 = NULL, *r2 = NULL;
    if (pthread_create(&t, NULL, returns, (void *)41) != 0 || pthread_join(t, &r1) != 0 ||
        pthread_create(&t, NULL, exits, (void *)41) != 0 || pthread_join(t, &r2) != 0) {
      perror("pthread");
      return 1;
    }
    printf("threads %lu %lu\n", (unsigned long)(uintptr_t)r1, (unsigned long)(uintptr_t)r2);
    fflush(stdout);
    run_until_stop(1);
    return 0;
  }
  if (strcmp(mode, "txn") == 0) {
    volatile unsigned long a = 0, b = 0;
    int fd = open("ticks", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    while (!stop_requested()) {
      if (safe_point_begin) {
        safe_point_begin();
      }
      a++;
      usleep(20000);
      b++;
      if (safe_point_end) {
        safe_point_end();
      }
      usleep(1000);
      char t[32];
      int len = snprintf(t, sizeof t, "%020lu\n", b);
      if (fd >= 0 && pwrite(fd, t, (size_t)len, 0) != len) {
        perror("pwrite");
        return 1;
      }
    }
    printf("a=%lu b=%lu\n", a, b);
    return a == b ? 0 : 1;
  }
  if (strcmp(mode, "sync") == 0) {
    sync();
    printf("synced\n");
    fflush(stdout);
    run_until_stop(1);
    return 0;
  }
  pid_t child = fork();
  if (child < 0) {
    perror("fork");
    return 1;
  }
  if (child == 0) {
    if (strcmp(mode, "tree") == 0) {
      char *args[] = { argv[0], "leaf", NULL };
      execv("/proc/self/exe", args);
      perror("exec");
      _exit(1);
    }
    run_until_stop(0);
    _exit(0);
  }
  run_until_stop(0);
  int status = 0;
  if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "child failed (status %#x)\n", status);
    return 1;
  }
  printf("done\n");
  return 0;
}
