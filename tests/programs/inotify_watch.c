/* inotify_watch.c: watches a directory (made in the working directory) for
 * created files, with a removed watch before it (so its wd is 2). After the
 * restarts, files created in the directory must still be reported, with the
 * same watch descriptor. At the stop file the program creates a file itself
 * and must see IN_CREATE for it (a blocking read, bounded by an alarm). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>
#include "zdtm.h"

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    char dir[256];
    snprintf(dir, sizeof dir, "inotify-dir-%d", (int)getpid());
    if (mkdir(dir, 0700) && errno != EEXIST)
        zdtm_fail("mkdir %s: %s", dir, strerror(errno));
    int in = inotify_init1(0);
    if (in < 0)
        zdtm_fail("inotify_init1: %s", strerror(errno));
    int gap = inotify_add_watch(in, ".", IN_ATTRIB);
    int wd = inotify_add_watch(in, dir, IN_CREATE);
    if (gap < 0 || wd < 0 || inotify_rm_watch(in, gap))
        zdtm_fail("inotify_add_watch: %s", strerror(errno));
    /* The IN_IGNORED of the removed watch. */
    char buf[4096] __attribute__((aligned(8)));
    if (read(in, buf, sizeof buf) <= 0)
        zdtm_fail("read IN_IGNORED: %s", strerror(errno));
    zdtm_ready();
    while (!zdtm_stop_requested())
        zdtm_msleep(50);
    char file[512];
    snprintf(file, sizeof file, "%s/created", dir);
    int f = open(file, O_CREAT | O_WRONLY, 0600);
    if (f < 0)
        zdtm_fail("create %s: %s", file, strerror(errno));
    close(f);
    alarm(10);
    ssize_t n = read(in, buf, sizeof buf);
    if (n < (ssize_t)sizeof(struct inotify_event))
        zdtm_fail("read event: %zd (%s)", n, strerror(errno));
    struct inotify_event *ev = (struct inotify_event *)buf;
    if (ev->wd != wd || !(ev->mask & IN_CREATE) || strcmp(ev->name, "created"))
        zdtm_fail("event wd %d (want %d) mask 0x%x name %s", ev->wd, wd, ev->mask,
                  ev->len ? ev->name : "");
    unlink(file);
    rmdir(dir);
    zdtm_pass();
}
