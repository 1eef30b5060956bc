/*
 * memfd.h: the sealed sparse memfd behind a section (section.h).
 *
 * A section is one sparse memfd per session, as large as the user address space (MB_ADDRESS_LIMIT),
 * sealed against shrinking, growing and further seals before any client sees it. The client maps
 * file offset X at virtual address X, so a reservation needs no offset allocator and no per-
 * reservation descriptor: pages exist only where the client touched committed memory.
 */
#ifndef MB_MEMFD_H
#define MB_MEMFD_H

#include <stdbool.h>
#include <stdint.h>

/* Creates a sealed section of size bytes. Returns the fd (close-on-exec) or -errno. */
int mb_memfd_create(const char *name, uint64_t size);

/* Frees the pages of [offset, offset+len) (hole punch); they read as zero afterwards. 0 or -errno.
 */
int mb_memfd_discard(int fd, uint64_t offset, uint64_t len);

/* Punching costs about 1 ms per 8 MiB of written pages. From this many bytes up, the broker
 * punches on a duplicate of the descriptor with its lock released before it updates the books
 * under the lock (a large decommit or release, a Goodbye, a section whose process exited). */
#define MB_PUNCH_FIRST_MIN ((uint64_t)1 << 20)

/* Bytes the kernel has allocated for the section (from st_blocks), or 0 on error. */
uint64_t mb_memfd_allocated(int fd);

/* Bytes of data extents (SEEK_DATA / SEEK_HOLE, page granular) in [from, to): the pages the
 * section really holds there. */
uint64_t mb_memfd_data(int fd, uint64_t from, uint64_t to);

/*
 * 0 when fd is a section a broker can own: a memfd of size bytes, open read-write, sealed
 * F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL and without write seals (so nobody can resize it, seal
 * it further or stop the broker's hole punches); else -EINVAL.
 */
int mb_memfd_check_section(int fd, uint64_t size);

struct mb_credit_word;

/*
 * Maps the section's credit page (mb_credit.h). reset sets the word to zero: a new section has no
 * credit, and an adopted one must not keep what a previous broker granted; a section restored
 * with its books keeps the word its client has. NULL on failure (the session then simply gets no
 * credit). Unmap with mb_memfd_unmap_credit.
 */
struct mb_credit_word *mb_memfd_map_credit(int fd, bool reset);
void mb_memfd_unmap_credit(struct mb_credit_word *w);

#endif
