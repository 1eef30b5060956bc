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

#include <stdint.h>

/* Creates a sealed section of size bytes. Returns the fd (close-on-exec) or -errno. */
int mb_memfd_create(const char *name, uint64_t size);

/* Frees the pages of [offset, offset+len) (hole punch); they read as zero afterwards. 0 or -errno.
 */
int mb_memfd_discard(int fd, uint64_t offset, uint64_t len);

/* Bytes the kernel has allocated for the section (from st_blocks), or 0 on error. */
uint64_t mb_memfd_allocated(int fd);

struct mb_credit_word;

/*
 * Maps the section's credit page (mb_credit.h) and sets the word to zero: a new section has no
 * credit, and an adopted one must not keep what a previous broker granted. NULL on failure (the
 * session then simply gets no credit). Unmap with mb_memfd_unmap_credit.
 */
struct mb_credit_word *mb_memfd_map_credit(int fd);
void mb_memfd_unmap_credit(struct mb_credit_word *w);

#endif
