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
 * Nothing here knows about plugins: they are loaded by dmtcp-run. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int main(int argc, char **argv)
{
  const char *mode = argc > 1 ? argv[1] : "single";
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
