/* pty_pair.c: a pty made inside the computation across checkpoint/restart,
 * used like `script` does:
 *   pty_pair (parent, holds the master) <--pty--> pty_pair-lead
 *                                                   `- pty_pair-child
 * The lead is the leader of its own session, with the slave as stdin,
 * stdout, stderr and controlling terminal. Like a job-control shell it
 * starts pty_pair-child in a process group of its own, makes that group the
 * terminal's foreground group and waits for it. The child answers every
 * line "REQ n" with "REP n" and checks, before each answer, that the slave
 * is still its controlling terminal with its group in the foreground
 * (tcgetsid, tcgetpgrp and their ioctls, /dev/tty opened anew and an fd on /dev/tty kept
 * open since the start, ttyname, /proc/self/stat tty_nr).
 * The parent keeps WINDOW requests in flight and always half of the next
 * one written (a partial line in the slave's canonical-mode buffer), so
 * bytes in flight both ways at checkpoint time must survive; replies must
 * follow in order with no loss or duplicate. The parent also checks that the
 * slave settings it made (no echo, VMIN/VTIME, a VQUIT character, output
 * processing turning "\n" into "\r\n") and the window size stay. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include "zdtm.h"

#define WINDOW 4
#define QUIT_CHAR 0x1d
#define ROWS 33
#define COLS 101

/* ---- child: the program running on the slave ---- */

static int dev_tty = -1; /* /dev/tty, opened once at the start */

/* Empty when the controlling terminal is right, else what is wrong. */
static const char *ctty_problem(void) {
    static char why[200];
    struct stat s0, st;
    if (fstat(0, &s0))
        return "fstat(0)";
    if (tcgetsid(0) != getsid(0) || getsid(0) != getppid())
        return "tcgetsid(0) is not our session (led by our parent)";
    if (getpgrp() != getpid())
        return "we lead no process group";
    if (tcgetpgrp(0) != getpgrp())
        return "tcgetpgrp(0) is not our group";
    /* The same through ioctl, as programs that skip libc's tc* calls ask. */
    pid_t pg = -1, sid = -1;
    if (ioctl(0, TIOCGPGRP, &pg) || pg != getpgrp())
        return "ioctl(TIOCGPGRP) is not our group";
    if (ioctl(0, TIOCGSID, &sid) || sid != getsid(0))
        return "ioctl(TIOCGSID) is not our session";
    int t = open("/dev/tty", O_RDWR | O_NOCTTY);
    if (t < 0)
        return "no /dev/tty (no controlling terminal)";
    /* /dev/tty is its own device node: ask the terminal behind it. */
    int same = tcgetsid(t) == getsid(0);
    close(t);
    if (!same)
        return "/dev/tty is not our session's terminal";
    if (tcgetsid(dev_tty) != getsid(0) || tcgetpgrp(dev_tty) != getpgrp())
        return "the fd on /dev/tty kept open is not our terminal";
    if (fstat(dev_tty, &st) || st.st_rdev != makedev(5, 0))
        return "the fd on /dev/tty kept open is no longer /dev/tty";
    char name[64];
    if (ttyname_r(0, name, sizeof name))
        return "ttyname(0) failed";
    if (stat(name, &st) || st.st_rdev != s0.st_rdev) {
        snprintf(why, sizeof why, "ttyname(0) = %s names another device", name);
        return why;
    }
    FILE *f = fopen("/proc/self/stat", "r");
    char buf[512];
    if (!f || !fgets(buf, sizeof buf, f)) {
        if (f)
            fclose(f);
        return "/proc/self/stat";
    }
    fclose(f);
    unsigned long tty_nr = 0;
    char *p = strrchr(buf, ')');
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %lu", &tty_nr) != 1 || tty_nr != s0.st_rdev)
        return "/proc/self/stat tty_nr is not the slave";
    return "";
}

static void child(const char *slave_name, int master) {
    close(master);
    if (setsid() < 0)
        _exit(10);
    int s = open(slave_name, O_RDWR);
    if (s < 0)
        _exit(11);
    if (ioctl(s, TIOCSCTTY, 0) < 0)
        _exit(12);
    dup2(s, 0);
    dup2(s, 1);
    dup2(s, 2);
    if (s > 2)
        close(s);
    prctl(PR_SET_NAME, "pty_pair-lead");
    pid_t g = fork();
    if (g < 0)
        _exit(14);
    setpgid(g, g); /* in both, whichever runs first */
    if (g > 0) {
        if (tcsetpgrp(0, g))
            _exit(15);
        int st;
        if (waitpid(g, &st, 0) != g)
            _exit(16);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 17);
    }
    prctl(PR_SET_NAME, "pty_pair-child");
    while (tcgetpgrp(0) != getpgrp())
        usleep(1000);
    dev_tty = open("/dev/tty", O_RDWR);
    if (dev_tty < 0)
        _exit(18);
    char line[256];
    while (fgets(line, sizeof line, stdin)) {
        unsigned long n;
        if (strcmp(line, "END\n") == 0)
            _exit(0);
        if (sscanf(line, "REQ %lu", &n) != 1) {
            printf("BAD line %s", line);
            fflush(stdout);
            continue;
        }
        const char *why = ctty_problem();
        if (*why)
            printf("BAD %s\n", why);
        else
            printf("REP %lu\n", n);
        fflush(stdout);
    }
    _exit(13);
}

/* ---- parent: holds the master ---- */

static char rbuf[4096];
static size_t rlen;

/* The next reply line (without "\r\n"), waiting up to 60 s. */
static void read_reply(int m, char *out, size_t cap) {
    for (;;) {
        char *crlf = memmem(rbuf, rlen, "\r\n", 2);
        if (crlf) {
            size_t l = crlf - rbuf;
            if (l >= cap)
                zdtm_fail("reply too long");
            memcpy(out, rbuf, l);
            out[l] = 0;
            memmove(rbuf, crlf + 2, rlen - l - 2);
            rlen -= l + 2;
            return;
        }
        if (memchr(rbuf, '\n', rlen))
            zdtm_fail("a line ended in a bare \\n: output processing (ONLCR) was lost: %.*s",
                      (int)rlen, rbuf);
        struct pollfd p = {.fd = m, .events = POLLIN};
        int r = poll(&p, 1, 60000);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            zdtm_fail("no reply from the child for 60 s (have %zu bytes: %.*s)", rlen, (int)rlen,
                      rbuf);
        ssize_t n = read(m, rbuf + rlen, sizeof rbuf - rlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            zdtm_fail("read master: %s", n ? strerror(errno) : "EOF");
        rlen += n;
    }
}

static void write_str(int m, const char *s) {
    size_t len = strlen(s);
    while (len) {
        ssize_t n = write(m, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            zdtm_fail("write master: %s", strerror(errno));
        s += n;
        len -= n;
    }
}

static void expect_reply(int m, unsigned long n) {
    char line[256], want[64];
    read_reply(m, line, sizeof line);
    snprintf(want, sizeof want, "REP %lu", n);
    if (strcmp(line, want))
        zdtm_fail("got \"%s\", expected \"%s\"", line, want);
}

static void check_settings(int m) {
    struct termios t;
    struct winsize w;
    if (tcgetattr(m, &t))
        zdtm_fail("tcgetattr: %s", strerror(errno));
    if (t.c_lflag & ECHO)
        zdtm_fail("ECHO is on again");
    if (!(t.c_lflag & ICANON))
        zdtm_fail("ICANON is off");
    if (t.c_cc[VMIN] != 3 || t.c_cc[VTIME] != 7)
        zdtm_fail("VMIN/VTIME are %d/%d, not 3/7", t.c_cc[VMIN], t.c_cc[VTIME]);
    if (t.c_cc[VQUIT] != QUIT_CHAR)
        zdtm_fail("VQUIT is %#x, not %#x", t.c_cc[VQUIT], QUIT_CHAR);
    if (!(t.c_oflag & OPOST) || !(t.c_oflag & ONLCR))
        zdtm_fail("OPOST/ONLCR were lost");
    if (ioctl(m, TIOCGWINSZ, &w))
        zdtm_fail("TIOCGWINSZ: %s", strerror(errno));
    if (w.ws_row != ROWS || w.ws_col != COLS || w.ws_xpixel != 7 || w.ws_ypixel != 9)
        zdtm_fail("window size is %dx%d (%d,%d)", w.ws_col, w.ws_row, w.ws_xpixel, w.ws_ypixel);
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0)
        zdtm_fail("posix_openpt: %s", strerror(errno));
    if (grantpt(m) || unlockpt(m))
        zdtm_fail("grantpt/unlockpt: %s", strerror(errno));
    char *name = ptsname(m);
    if (!name)
        zdtm_fail("ptsname: %s", strerror(errno));
    char slave_name[64];
    snprintf(slave_name, sizeof slave_name, "%s", name);

    struct termios t;
    if (tcgetattr(m, &t))
        zdtm_fail("tcgetattr: %s", strerror(errno));
    t.c_lflag &= ~(ECHO | ECHOE | ECHOK | ECHOKE | ECHOCTL);
    t.c_lflag |= ICANON;
    t.c_oflag |= OPOST | ONLCR;
    t.c_cc[VMIN] = 3;
    t.c_cc[VTIME] = 7;
    t.c_cc[VQUIT] = QUIT_CHAR;
    if (tcsetattr(m, TCSANOW, &t))
        zdtm_fail("tcsetattr: %s", strerror(errno));
    struct winsize w = {.ws_row = ROWS, .ws_col = COLS, .ws_xpixel = 7, .ws_ypixel = 9};
    if (ioctl(m, TIOCSWINSZ, &w))
        zdtm_fail("TIOCSWINSZ: %s", strerror(errno));

    pid_t c = fork();
    if (c < 0)
        zdtm_fail("fork: %s", strerror(errno));
    if (c == 0)
        child(slave_name, m);

    unsigned long next = 0, reply = 0;
    char req[64];
    for (; next < WINDOW; next++) {
        snprintf(req, sizeof req, "REQ %lu\n", next);
        write_str(m, req);
    }
    zdtm_ready();
    while (!zdtm_stop_requested()) {
        /* Half of the next request, then a reply, then the rest. */
        write_str(m, "REQ ");
        expect_reply(m, reply++);
        snprintf(req, sizeof req, "%lu\n", next++);
        write_str(m, req);
        check_settings(m);
        if (next % 16 == 0)
            zdtm_msleep(2);
    }
    while (reply < next)
        expect_reply(m, reply++);
    write_str(m, "END\n");
    int st;
    if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child failed (%#x)", st);
    check_settings(m);
    printf("parent: %lu requests answered\n", next);
    zdtm_pass();
}
