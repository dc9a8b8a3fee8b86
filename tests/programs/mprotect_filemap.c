/* mprotect_filemap: a read-only anonymous page holding a pattern (writing to
 * it must still fault), and a MAP_PRIVATE mapping of a file this program
 * creates, with some pages modified in memory. Checked every iteration and at
 * stop: the modified pages, the untouched file-backed pages, and the file on
 * disk (which must be unchanged). */
#define _GNU_SOURCE
#include "zdtm.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define NPAGES 16

static long page;
static sigjmp_buf fault_jmp;
static volatile sig_atomic_t faults;

static unsigned char file_byte(long pg, long off) { return (unsigned char)(pg * 31 + off * 7 + 1); }
static unsigned char mod_byte(long pg, long off) { return (unsigned char)(pg * 17 + off * 3 + 0x55); }
static unsigned char ro_byte(long off) { return (unsigned char)(off * 13 + 0xA5); }
static int is_modified(long pg) { return pg == 0 || pg == 3 || pg == 7 || pg == NPAGES - 1; }

static void on_segv(int sig)
{
	(void)sig;
	faults++;
	siglongjmp(fault_jmp, 1);
}

static void check_ro(volatile unsigned char *ro)
{
	for (long i = 0; i < page; i++)
		if (ro[i] != ro_byte(i))
			zdtm_fail("read-only page byte %ld is %#x, expected %#x", i, ro[i], ro_byte(i));
	int before = faults;
	if (sigsetjmp(fault_jmp, 1) == 0) {
		ro[page / 2] = 0;
		zdtm_fail("write to the PROT_READ page did not fault");
	}
	if (faults != before + 1)
		zdtm_fail("fault count %d, expected %d", (int)faults, before + 1);
	if (ro[page / 2] != ro_byte(page / 2))
		zdtm_fail("faulting write changed the read-only page");
}

static void check_map(const unsigned char *map, const char *path)
{
	for (long pg = 0; pg < NPAGES; pg++)
		for (long off = 0; off < page; off++) {
			unsigned char want = is_modified(pg) ? mod_byte(pg, off) : file_byte(pg, off);
			if (map[pg * page + off] != want)
				zdtm_fail("mapping page %ld byte %ld is %#x, expected %#x (%s)", pg, off,
					  map[pg * page + off], want,
					  is_modified(pg) ? "modified" : "file-backed");
		}
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		zdtm_fail("reopen %s: %s", path, strerror(errno));
	unsigned char *buf = malloc((size_t)page);
	for (long pg = 0; pg < NPAGES; pg++) {
		if (pread(fd, buf, (size_t)page, pg * page) != page)
			zdtm_fail("short read of %s page %ld", path, pg);
		for (long off = 0; off < page; off++)
			if (buf[off] != file_byte(pg, off))
				zdtm_fail("file %s changed on disk at page %ld byte %ld", path, pg, off);
	}
	free(buf);
	close(fd);
}

int main(int argc, char **argv)
{
	zdtm_init(argc, argv);
	if (argc < 2)
		zdtm_fail("usage: mprotect_filemap FILE");
	const char *path = argv[1];
	page = sysconf(_SC_PAGESIZE);

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_segv;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, NULL) < 0)
		zdtm_fail("sigaction: %s", strerror(errno));

	unsigned char *ro = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ro == MAP_FAILED)
		zdtm_fail("mmap anonymous: %s", strerror(errno));
	for (long i = 0; i < page; i++)
		ro[i] = ro_byte(i);
	if (mprotect(ro, (size_t)page, PROT_READ) < 0)
		zdtm_fail("mprotect: %s", strerror(errno));

	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		zdtm_fail("create %s: %s", path, strerror(errno));
	unsigned char *buf = malloc((size_t)page);
	for (long pg = 0; pg < NPAGES; pg++) {
		for (long off = 0; off < page; off++)
			buf[off] = file_byte(pg, off);
		if (write(fd, buf, (size_t)page) != page)
			zdtm_fail("write %s: %s", path, strerror(errno));
	}
	free(buf);
	if (fsync(fd) < 0)
		zdtm_fail("fsync %s: %s", path, strerror(errno));
	unsigned char *map = mmap(NULL, (size_t)(NPAGES * page), PROT_READ | PROT_WRITE,
				  MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED)
		zdtm_fail("mmap %s: %s", path, strerror(errno));
	close(fd);
	for (long pg = 0; pg < NPAGES; pg++)
		if (is_modified(pg))
			for (long off = 0; off < page; off++)
				map[pg * page + off] = mod_byte(pg, off);

	zdtm_ready();
	unsigned long iterations = 0;
	while (!zdtm_stop_requested()) {
		check_ro(ro);
		check_map(map, path);
		iterations++;
		zdtm_msleep(20);
	}
	check_ro(ro);
	check_map(map, path);
	printf("mprotect_filemap: %lu iterations, %d faults\n", iterations, (int)faults);
	zdtm_pass();
}
