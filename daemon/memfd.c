/*
 * memfd.c: sealed sparse memfds.
 */
#include "memfd.h"

#include "mb_credit.h"
#include "mb_extent.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U /* Linux 6.3; absent from Debian 12's headers */
#endif

int mb_memfd_create(const char *name, uint64_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);

	/* Kernels before 6.3 reject the unknown flag; they have no exec seal to apply. */
	if (fd < 0 && errno == EINVAL)
		fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)size) != 0 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	return fd;
}

int mb_memfd_discard(int fd, uint64_t offset, uint64_t len)
{
	if (len == 0)
		return 0;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)len) !=
	    0)
		return -errno;
	return 0;
}

uint64_t mb_memfd_allocated(int fd)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return 0;
	return (uint64_t)st.st_blocks * 512;
}

uint64_t mb_memfd_data(int fd, uint64_t from, uint64_t to)
{
	uint64_t sum = 0, start, end;
	unsigned seeks = UINT_MAX;

	for (uint64_t pos = from; pos < to; pos = end) {
		mb_extent_data(fd, pos, to, 0, &seeks, &start, &end);
		sum += end - start;
	}
	return sum;
}

int mb_memfd_check_section(int fd, uint64_t size)
{
	const int need = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
	const int forbidden = F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;
	struct stat st;
	int seals = fcntl(fd, F_GET_SEALS);

	/* Only a memfd carries seals. */
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || seals < 0 || (seals & need) != need ||
	    (seals & forbidden) != 0 || (uint64_t)st.st_size != size ||
	    (fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDWR)
		return -EINVAL;
	return 0;
}

struct mb_credit_word *mb_memfd_map_credit(int fd, bool reset)
{
	void *p =
	    mmap(NULL, MB_CREDIT_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, MB_CREDIT_OFFSET);

	if (p == MAP_FAILED)
		return NULL;
	if (!reset)
		return p;
	__atomic_store_n(&((mb_credit_word *)p)->credit, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&((mb_credit_word *)p)->reserve_count, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&((mb_credit_word *)p)->reserve_bytes, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&((mb_credit_word *)p)->target, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&((mb_credit_word *)p)->credit_level, 0, __ATOMIC_RELEASE);
	return p;
}

void mb_memfd_unmap_credit(struct mb_credit_word *w)
{
	if (w != NULL)
		munmap(w, MB_CREDIT_PAGE);
}
