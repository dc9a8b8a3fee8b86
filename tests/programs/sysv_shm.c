/* sysv_shm.c: SysV IPC objects survive checkpoint/restart with their ids.
 *
 * - A shared memory segment attached by parent and child: they take turns
 *   incrementing a counter in it, so each stalls (and fails) if the segment
 *   stops being shared; the shmid, key lookup and attach count are checked
 *   on every turn.
 * - A segment nobody has attached, with a pattern; a segment removed
 *   (IPC_RMID) while the parent keeps it attached.
 * - A semaphore set and a message queue with messages in flight.
 * Everything is checked again at the end, after the restarts. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>
#include "zdtm.h"

/* Keys unique per process: run bare, two instances share one namespace. */
#define KEY(n) ((key_t)(0x5e000000 | ((getpid() & 0xffff) << 4) | (n)))
static key_t KEY_SHARED, KEY_LONELY, KEY_SEM, KEY_MSG;
#define SEG_SIZE (3 * 4096 + 100)
#define MIRROR (3 * 4096) /* the counter again, in the last page */

struct shared {
    volatile long counter;
    volatile int turn; /* 0: parent, 1: child */
    volatile int stop;
    char pattern[8192];
};

static int shared_id;
static struct shared *s;
/* The same segment attached again elsewhere (child), and a partial attach
 * with its first page unmapped (parent): both must see what s sees. */
static struct shared *again;
static char *partial;

static void check_segment(const char *who) {
    if (shmget(KEY_SHARED, 0, 0) != shared_id)
        zdtm_fail("%s: key %#x no longer names shmid %d (%s)", who, KEY_SHARED, shared_id, strerror(errno));
    struct shmid_ds ds;
    if (shmctl(shared_id, IPC_STAT, &ds) != 0)
        zdtm_fail("%s: shmctl(%d): %s", who, shared_id, strerror(errno));
    if (ds.shm_segsz != SEG_SIZE)
        zdtm_fail("%s: segment size %zu", who, (size_t)ds.shm_segsz);
    if ((ds.shm_perm.mode & 0777) != 0640)
        zdtm_fail("%s: segment mode %o", who, ds.shm_perm.mode & 0777);
}

static void take_turns(int me, const char *who) {
    long last = -1;
    while (!s->stop) {
        long waited = 0;
        while (s->turn != me && !s->stop) {
            zdtm_msleep(1);
            if (++waited > 20000)
                zdtm_fail("%s: no turn for 20 s at counter %ld (segment not shared?)", who, s->counter);
        }
        if (s->stop)
            break;
        if (last >= 0 && s->counter != last + 1)
            zdtm_fail("%s: counter %ld after %ld", who, s->counter, last);
        last = ++s->counter;
        if (again && again->counter != last)
            zdtm_fail("%s: second attach sees counter %ld, not %ld", who, again->counter, last);
        *(volatile long *)((char *)s + MIRROR) = last;
        if (partial && *(volatile long *)(partial + MIRROR - 4096) != last)
            zdtm_fail("%s: the partial attach does not show the segment", who);
        if (last % 64 == 0)
            check_segment(who);
        if (me == 0 && zdtm_stop_requested())
            s->stop = 1;
        s->turn = !me;
        zdtm_msleep(1);
    }
}

int main(int argc, char **argv) {
    zdtm_init(argc, argv);
    KEY_SHARED = KEY(1);
    KEY_LONELY = KEY(2);
    KEY_SEM = KEY(3);
    KEY_MSG = KEY(4);
    /* Used-up ids first, so the ids below are not simply the first ones a
     * fresh namespace hands out. */
    for (int i = 0; i < 3; i++) {
        shmctl(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600), IPC_RMID, NULL);
        semctl(semget(IPC_PRIVATE, 1, IPC_CREAT | 0600), 0, IPC_RMID);
        msgctl(msgget(IPC_PRIVATE, IPC_CREAT | 0600), IPC_RMID, NULL);
    }
    shared_id = shmget(KEY_SHARED, SEG_SIZE, IPC_CREAT | IPC_EXCL | 0640);
    if (shared_id < 0)
        zdtm_fail("shmget: %s", strerror(errno));
    s = shmat(shared_id, NULL, 0);
    if (s == (void *)-1)
        zdtm_fail("shmat: %s", strerror(errno));
    for (size_t i = 0; i < sizeof s->pattern; i++)
        s->pattern[i] = (char)(i * 7 + 1);
    /* The tail of the segment, past the struct, carries a pattern too. */
    char *tail = (char *)s + SEG_SIZE - 50;
    memcpy(tail, "end-of-segment", 15);

    int lonely = shmget(KEY_LONELY, 10000, IPC_CREAT | IPC_EXCL | 0600);
    char *l = shmat(lonely, NULL, 0);
    if (lonely < 0 || l == (void *)-1)
        zdtm_fail("lonely segment: %s", strerror(errno));
    for (int i = 0; i < 10000; i++)
        l[i] = (char)(i % 251);
    shmdt(l);

    int doomed = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
    char *d = shmat(doomed, NULL, 0);
    if (doomed < 0 || d == (void *)-1)
        zdtm_fail("doomed segment: %s", strerror(errno));
    strcpy(d, "removed but attached");
    if (shmctl(doomed, IPC_RMID, NULL) != 0)
        zdtm_fail("IPC_RMID: %s", strerror(errno));

    int sem = semget(KEY_SEM, 3, IPC_CREAT | IPC_EXCL | 0600);
    unsigned short vals[3] = {1, 5, 42};
    if (sem < 0 || semctl(sem, 0, SETALL, vals) != 0)
        zdtm_fail("semaphores: %s", strerror(errno));
    int msq = msgget(KEY_MSG, IPC_CREAT | IPC_EXCL | 0600);
    if (msq < 0)
        zdtm_fail("msgget: %s", strerror(errno));
    struct { long mtype; char text[32]; } m;
    for (int i = 0; i < 3; i++) {
        m.mtype = 3 - i;
        snprintf(m.text, sizeof m.text, "message %d", i);
        if (msgsnd(msq, &m, strlen(m.text) + 1, 0) != 0)
            zdtm_fail("msgsnd: %s", strerror(errno));
    }
    printf("shmid %d lonely %d doomed %d sem %d msq %d\n", shared_id, lonely, doomed, sem, msq);

    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        prctl(PR_SET_NAME, "sysv-child");
        again = shmat(shared_id, NULL, 0);
        if (again == (void *)-1)
            zdtm_fail("child: second shmat: %s", strerror(errno));
        take_turns(1, "child");
        exit(0);
    }
    partial = shmat(shared_id, NULL, SHM_RDONLY);
    if (partial == (void *)-1 || munmap(partial, 4096) != 0)
        zdtm_fail("partial attach: %s", strerror(errno));
    partial += 4096;
    zdtm_ready();
    take_turns(0, "parent");
    int st;
    if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
        zdtm_fail("child failed (%#x)", st);

    check_segment("parent");
    for (size_t i = 0; i < sizeof s->pattern; i++)
        if (s->pattern[i] != (char)(i * 7 + 1))
            zdtm_fail("pattern byte %zu changed", i);
    if (strcmp(tail, "end-of-segment") != 0)
        zdtm_fail("segment tail lost");
    if (shmget(KEY_LONELY, 0, 0) != lonely)
        zdtm_fail("unattached segment: key no longer names id %d", lonely);
    l = shmat(lonely, NULL, SHM_RDONLY);
    if (l == (void *)-1)
        zdtm_fail("shmat lonely %d: %s", lonely, strerror(errno));
    for (int i = 0; i < 10000; i++)
        if (l[i] != (char)(i % 251))
            zdtm_fail("unattached segment byte %d changed", i);
    if (strcmp(d, "removed but attached") != 0)
        zdtm_fail("removed segment lost its contents");
    struct shmid_ds ds;
    if (shmctl(doomed, IPC_STAT, &ds) != 0 || !(ds.shm_perm.mode & SHM_DEST))
        zdtm_fail("removed segment %d is not marked for removal any more", doomed);
    if (semget(KEY_SEM, 0, 0) != sem || semctl(sem, 0, GETALL, vals) != 0)
        zdtm_fail("semaphore set %d lost: %s", sem, strerror(errno));
    if (vals[0] != 1 || vals[1] != 5 || vals[2] != 42)
        zdtm_fail("semaphore values %d %d %d", vals[0], vals[1], vals[2]);
    if (msgget(KEY_MSG, 0) != msq)
        zdtm_fail("message queue %d lost", msq);
    for (int i = 0; i < 3; i++) {
        char want[32];
        snprintf(want, sizeof want, "message %d", i);
        if (msgrcv(msq, &m, sizeof m.text, 0, IPC_NOWAIT) < 0)
            zdtm_fail("msgrcv %d: %s", i, strerror(errno));
        if (m.mtype != 3 - i || strcmp(m.text, want) != 0)
            zdtm_fail("message %d: type %ld text '%s'", i, m.mtype, m.text);
    }
    printf("counter %ld\n", s->counter);
    shmctl(shared_id, IPC_RMID, NULL);
    shmctl(lonely, IPC_RMID, NULL);
    semctl(sem, 0, IPC_RMID);
    msgctl(msq, IPC_RMID, NULL);
    zdtm_pass();
}
