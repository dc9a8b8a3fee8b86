/* wpfloor: the floors of a userfaultfd write-protect snapshot on this kernel,
 * and a working model of one (issue 20). Build: gcc -O2 -pthread.
 *
 *   wpfloor MIB [reps]
 *
 * For MIB of touched private anonymous memory, prints one line of JSON:
 *   fork_ms       fork() of this process: the page-table copy that the
 *                 copy-on-write snapshot child costs today (the floor of it)
 *   wp_reg_ms     UFFDIO_REGISTER (MODE_WP) of the range
 *   wp_ms         UFFDIO_WRITEPROTECT of the whole range (the WP floor)
 *   unwp_ms       removing the protection again, whole range in one call
 *   mprotect_ms   mprotect(PROT_READ) of the range, for comparison (the same
 *                 page-table walk without userfaultfd)
 *   scan_idle_ms  the pre-copy floor: an asynchronous write-protect
 *                 userfaultfd (usable unprivileged) on the range, then one
 *                 PAGEMAP_SCAN that lists the written pages and protects them
 *                 again, when nothing was written (scan_1pct_*: after 1% of
 *                 the pages were written)
 *   kfault_root   a read() from a pipe into a protected page, with a
 *                 userfaultfd that catches kernel-mode faults (needs root
 *                 here): "ok" if the fault handler resolved it
 *   kfault_user   the same with UFFD_USER_MODE_ONLY (what an unprivileged
 *                 process may have): "EFAULT" means the program's read()
 *                 fails, i.e. sync write-protect is unusable unprivileged
 *   snap_*        a full model of the snapshot: protect (frozen), then a
 *                 writer thread saves every page while the main thread
 *                 rewrites the whole region in a loop; a fault-handler thread
 *                 copies a page's old content aside before letting a write
 *                 through. The saved image is checked for consistency
 *                 (every page = the state at the protect instant).
 *                 snap_frozen_ms (= protect), snap_save_ms, snap_faults
 *                 (pages copied aside), snap_ok.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
/* PAGEMAP_SCAN (linux/fs.h, 6.7+), not in this distribution's headers. */
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
struct page_region {
	uint64_t start, end, categories;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)

#define PG 4096UL
#define CHUNK 256UL /* pages the writer saves under one lock */

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void die(const char *what)
{
	fprintf(stderr, "wpfloor: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int make_uffd(int user_only)
{
	int fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | (user_only ? UFFD_USER_MODE_ONLY : 0));
	if (fd < 0)
		return -1;
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };
	if (ioctl(fd, UFFDIO_API, &api))
		die("UFFDIO_API");
	return fd;
}

static void reg_wp(int fd, void *p, size_t len)
{
	struct uffdio_register r = { .range = { (uint64_t)p, len }, .mode = UFFDIO_REGISTER_MODE_WP };
	if (ioctl(fd, UFFDIO_REGISTER, &r))
		die("UFFDIO_REGISTER");
}

static int wp(int fd, void *p, size_t len, int on)
{
	struct uffdio_writeprotect w = { .range = { (uint64_t)p, len },
					 .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0 };
	return ioctl(fd, UFFDIO_WRITEPROTECT, &w);
}

/* Page p of generation g: word 0 = g, word 1 = p, the rest a hash of both. */
static uint64_t word(uint64_t p, uint64_t g, uint64_t w)
{
	uint64_t x = (p << 24) ^ (g << 44) ^ w;
	x = x * 0x9E3779B97F4A7C15ULL + 0x2545F4914F6CDD1DULL;
	x ^= x >> 29;
	return x;
}

static void fill(uint64_t *page, uint64_t p, uint64_t g)
{
	for (uint64_t w = 2; w < PG / 8; w++)
		page[w] = word(p, g, w);
	page[1] = p;
	page[0] = g;
}

/* The generation a saved page holds, or -1 if it is torn. */
static int64_t gen_of(const uint64_t *page, uint64_t p)
{
	uint64_t g = page[0];
	if (page[1] != p)
		return -1;
	for (uint64_t w = 2; w < PG / 8; w++)
		if (page[w] != word(p, g, w))
			return -1;
	return (int64_t)g;
}

/* The model snapshot. */
static unsigned char *region, *image;
static uint64_t npages;
static int ufd;
static pthread_mutex_t *locks;
static _Atomic unsigned char *saved;
static atomic_int stop_handler;
static atomic_ulong faults;

static void save_page(uint64_t p)
{
	memcpy(image + p * PG, region + p * PG, PG);
	atomic_store(&saved[p], 1);
}

static void *handler(void *arg)
{
	(void)arg;
	struct pollfd pfd = { ufd, POLLIN, 0 };
	while (!atomic_load(&stop_handler)) {
		if (poll(&pfd, 1, 10) <= 0)
			continue;
		struct uffd_msg m;
		ssize_t n = read(ufd, &m, sizeof m);
		if (n != sizeof m)
			continue;
		if (m.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t p = ((uint64_t)m.arg.pagefault.address - (uint64_t)region) / PG;
		pthread_mutex_t *l = &locks[p / CHUNK];
		pthread_mutex_lock(l);
		if (!atomic_load(&saved[p])) {
			save_page(p); /* the old content: the write has not happened */
			atomic_fetch_add(&faults, 1);
		}
		pthread_mutex_unlock(l);
		if (wp(ufd, region + p * PG, PG, 0)) /* un-protect and wake */
			die("un-protect");
	}
	return NULL;
}

static void *writer(void *arg)
{
	(void)arg;
	for (uint64_t c = 0; c < npages; c += CHUNK) {
		uint64_t end = c + CHUNK < npages ? c + CHUNK : npages;
		pthread_mutex_lock(&locks[c / CHUNK]);
		for (uint64_t p = c; p < end; p++)
			if (!atomic_load(&saved[p]))
				save_page(p);
		pthread_mutex_unlock(&locks[c / CHUNK]);
		if (wp(ufd, region + c * PG, (end - c) * PG, 0))
			die("un-protect chunk");
	}
	return NULL;
}

static uint64_t cursor, generation; /* the "program's" state */

static void *kwriter(void *arg)
{
	/* A kernel-mode write: read() from a pipe into the protected page. */
	int *pfd = arg;
	static char src[PG];
	memset(src, 7, PG);
	if (write(pfd[1], src, PG) != (ssize_t)PG)
		die("pipe write");
	ssize_t n = read(pfd[0], region, PG);
	return (void *)(intptr_t)(n == (ssize_t)PG ? 0 : errno);
}

static const char *kernel_fault(int user_only)
{
	int fd = make_uffd(user_only);
	if (fd < 0)
		return "no-uffd";
	reg_wp(fd, region, PG);
	if (wp(fd, region, PG, 1))
		die("wp");
	int pfd[2];
	if (pipe(pfd))
		die("pipe");
	pthread_t t;
	pthread_create(&t, NULL, kwriter, pfd);
	/* Serve one fault, for up to 1 s. */
	struct pollfd pp = { fd, POLLIN, 0 };
	int served = 0;
	if (poll(&pp, 1, 1000) > 0) {
		struct uffd_msg m;
		if (read(fd, &m, sizeof m) == sizeof m && m.event == UFFD_EVENT_PAGEFAULT) {
			wp(fd, region, PG, 0);
			served = 1;
		}
	}
	void *r;
	pthread_join(t, &r);
	close(pfd[0]);
	close(pfd[1]);
	close(fd);
	int err = (int)(intptr_t)r;
	if (!err)
		return served ? "ok" : "ok-no-fault";
	return err == EFAULT ? "EFAULT" : strerror(err);
}

/* The pre-copy floor: with an asynchronous write-protect userfaultfd (what
 * an unprivileged process may use: the kernel resolves every fault itself,
 * kernel-mode ones included), the time of one PAGEMAP_SCAN that lists the
 * pages written since the last scan and protects them again, after the
 * program wrote `written` of the pages. Returns ms, or -1. */
static double scan_floor(size_t len, uint64_t written, uint64_t *found)
{
	int fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0)
		return -1;
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC };
	if (ioctl(fd, UFFDIO_API, &api))
		return -1;
	reg_wp(fd, region, len);
	if (wp(fd, region, len, 1))
		return -1;
	uint64_t step = written ? npages / written : 0;
	for (uint64_t k = 0; k < written; k++) { /* written, content kept */
		volatile unsigned char *b = &region[k * step * PG + 8];
		*b ^= 1;
		*b ^= 1;
	}
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	static struct page_region regs[4096];
	double t = now_ms();
	uint64_t from = (uint64_t)region, end = (uint64_t)region + len, n = 0;
	while (from < end) {
		struct pm_scan_arg a = { .size = sizeof a, .flags = PM_SCAN_WP_MATCHING,
					 .start = from, .end = end, .vec = (uint64_t)regs,
					 .vec_len = 4096, .category_mask = PAGE_IS_WRITTEN,
					 .return_mask = PAGE_IS_WRITTEN };
		long r = ioctl(pm, PAGEMAP_SCAN, &a);
		if (r < 0) {
			close(pm);
			close(fd);
			return -1;
		}
		for (long i = 0; i < r; i++)
			n += (regs[i].end - regs[i].start) / PG;
		if (a.walk_end <= from)
			break;
		from = a.walk_end;
	}
	double d = now_ms() - t;
	*found = n;
	close(pm);
	close(fd);
	return d;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: wpfloor MIB [reps]\n");
		return 2;
	}
	uint64_t mib = strtoull(argv[1], NULL, 10);
	int reps = argc > 2 ? atoi(argv[2]) : 1;
	npages = mib * 256;
	size_t len = npages * PG;
	region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	image = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED || image == MAP_FAILED)
		die("mmap");
	/* WPFLOOR_THP=1: transparent huge pages (page tables 512x smaller);
	 * default 4 KiB pages, as a heap of small allocations has. */
	const char *thp = getenv("WPFLOOR_THP");
	madvise(region, len, thp && *thp == '1' ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	for (uint64_t p = 0; p < npages; p++)
		fill((uint64_t *)(region + p * PG), p, 1);

	double fork_ms = 1e9, reg_ms = 1e9, wp_ms = 1e9, unwp_ms = 1e9, mprot_ms = 1e9;
	for (int r = 0; r < reps; r++) {
		double t = now_ms();
		if (mprotect(region, len, PROT_READ))
			die("mprotect");
		double d0 = now_ms() - t;
		mprotect(region, len, PROT_READ | PROT_WRITE);
		if (d0 < mprot_ms)
			mprot_ms = d0;
		t = now_ms();
		pid_t c = fork();
		if (c == 0)
			_exit(0);
		double d = now_ms() - t;
		waitpid(c, NULL, 0);
		if (d < fork_ms)
			fork_ms = d;

		int fd = make_uffd(0);
		if (fd < 0)
			die("userfaultfd");
		t = now_ms();
		reg_wp(fd, region, len);
		d = now_ms() - t;
		if (d < reg_ms)
			reg_ms = d;
		t = now_ms();
		if (wp(fd, region, len, 1))
			die("wp");
		d = now_ms() - t;
		if (d < wp_ms)
			wp_ms = d;
		t = now_ms();
		if (wp(fd, region, len, 0))
			die("unwp");
		d = now_ms() - t;
		if (d < unwp_ms)
			unwp_ms = d;
		close(fd);
	}
	uint64_t f0 = 0, f1 = 0;
	double scan0 = scan_floor(len, 0, &f0);
	double scan1 = scan_floor(len, npages / 100, &f1);
	memset(image, 0, len); /* touched (after the floors: fork would copy it),
				* so saving measures copying, not first faults */
	const char *kroot = kernel_fault(0);
	const char *kuser = kernel_fault(1);

	/* The model snapshot, with the "program" rewriting the region in order,
	 * a page at a time, generation after generation. */
	ufd = make_uffd(0);
	if (ufd < 0)
		die("userfaultfd");
	reg_wp(ufd, region, len);
	locks = calloc(npages / CHUNK + 1, sizeof *locks);
	for (uint64_t i = 0; i <= npages / CHUNK; i++)
		pthread_mutex_init(&locks[i], NULL);
	saved = calloc(npages, 1);
	generation = 1;
	cursor = 0;
	/* Run the program for a while, then "freeze" it by protecting. */
	for (uint64_t k = 0; k < npages / 3; k++) {
		fill((uint64_t *)(region + cursor * PG), cursor, generation + 1);
		if (++cursor == npages) {
			cursor = 0;
			generation++;
		}
	}
	uint64_t cursor_at = cursor, gen_at = generation;
	double t = now_ms();
	if (wp(ufd, region, len, 1))
		die("wp");
	double frozen = now_ms() - t;
	pthread_t h, w;
	pthread_create(&h, NULL, handler, NULL);
	t = now_ms();
	pthread_create(&w, NULL, writer, NULL);
	/* The program runs on: rewrites every page, in a loop, while saving. */
	uint64_t rewritten = 0;
	for (;;) {
		fill((uint64_t *)(region + cursor * PG), cursor, generation + 1);
		rewritten++;
		if (++cursor == npages) {
			cursor = 0;
			generation++;
		}
		if ((rewritten & 255) == 0 && pthread_tryjoin_np(w, NULL) == 0)
			break;
	}
	double save = now_ms() - t;
	atomic_store(&stop_handler, 1);
	pthread_join(h, NULL);
	/* Consistent: pages before the cursor at the freeze have gen+1, the
	 * others gen. */
	long bad = 0;
	for (uint64_t p = 0; p < npages; p++) {
		int64_t g = gen_of((uint64_t *)(image + p * PG), p);
		int64_t want = p < cursor_at ? (int64_t)gen_at + 1 : (int64_t)gen_at;
		if (g != want)
			bad++;
	}
	printf("{\"mib\": %lu, \"fork_ms\": %.2f, \"wp_reg_ms\": %.2f, \"wp_ms\": %.2f, "
	       "\"unwp_ms\": %.2f, \"mprotect_ms\": %.2f, "
	       "\"scan_idle_ms\": %.2f, \"scan_1pct_ms\": %.2f, \"scan_1pct_pages\": %lu, \"kfault_root\": \"%s\", \"kfault_user\": \"%s\", "
	       "\"snap_frozen_ms\": %.2f, \"snap_save_ms\": %.1f, \"snap_faults\": %lu, "
	       "\"snap_rewritten\": %lu, \"snap_bad_pages\": %ld, \"snap_ok\": %s}\n",
	       (unsigned long)mib, fork_ms, reg_ms, wp_ms, unwp_ms, mprot_ms, scan0, scan1, (unsigned long)f1, kroot, kuser, frozen, save,
	       (unsigned long)atomic_load(&faults), (unsigned long)rewritten, bad,
	       bad ? "false" : "true");
	return bad ? 1 : 0;
}
