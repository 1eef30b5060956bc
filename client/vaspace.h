/*
 * vaspace.h: where a client's reservations go in its address space.
 *
 * Reservations are carved out of large arenas (MB_ARENA_SIZE) onto which the session's section is
 * mapped once, PROT_NONE, at file offset == address. A reservation then costs no mmap and no
 * mapping of its own: neighbouring reservations share one kernel VMA until commits with different
 * protections split it, so 100,000 reservations stay far below vm.max_map_count. Reservations
 * larger than MB_ARENA_LARGE, and those asked at an address outside every arena, get a mapping of
 * their own.
 *
 * Free space inside arenas is kept in two red-black trees (by size for best fit, by address for
 * requests at a given address); freed blocks are not coalesced.
 *
 * Thread-safe (own lock).
 */
#ifndef MB_VASPACE_H
#define MB_VASPACE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <bsd/sys/tree.h>

#define MB_ARENA_SIZE  ((size_t)64 << 30) /* 64 GiB of address space, no memory */
#define MB_ARENA_LARGE ((size_t)1 << 30)  /* bigger reservations are mapped on their own */
#define MB_MAX_ARENAS  256

typedef struct mb_va_block {
	RB_ENTRY(mb_va_block) by_size;
	RB_ENTRY(mb_va_block) by_addr;
	uintptr_t addr;
	size_t size;
} mb_va_block;

RB_HEAD(mb_va_size_tree, mb_va_block);
RB_HEAD(mb_va_addr_tree, mb_va_block);

typedef struct mb_arena {
	uintptr_t base;
	uintptr_t bump; /* everything from here to base + MB_ARENA_SIZE is unused */
} mb_arena;

typedef struct mb_vaspace {
	pthread_mutex_t lock;
	int section_fd;
	uint64_t section_size;
	int narenas;
	mb_arena arenas[MB_MAX_ARENAS];
	struct mb_va_size_tree free_by_size;
	struct mb_va_addr_tree free_by_addr;
} mb_vaspace;

/* Prepares an empty space over section_fd (not owned). */
void mb_vaspace_init(mb_vaspace *v, int section_fd, uint64_t section_size);

/* Unmaps every arena and frees the bookkeeping (dedicated mappings are the caller's). */
void mb_vaspace_fini(mb_vaspace *v);

/*
 * Gives span bytes (a non-zero multiple of 64 KiB) of address space, mapped to the section at
 * offset == address with PROT_NONE and excluded from fork. want == 0: anywhere; else exactly at
 * want (64 KiB aligned). Returns 0 and *addr, -EEXIST if want is not free, -ENOMEM.
 */
int mb_vaspace_alloc(mb_vaspace *v, uintptr_t want, size_t span, uintptr_t *addr);

/* Takes back a range from mb_vaspace_alloc: its pages become PROT_NONE again (or it is unmapped).
 */
void mb_vaspace_free(mb_vaspace *v, uintptr_t addr, size_t span);

#endif
