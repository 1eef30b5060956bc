/*
 * vaspace.c: arenas and a best-fit allocator of address space over them.
 */
#include "vaspace.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "mb_regmap.h"

static int cmp_size(const mb_va_block *a, const mb_va_block *b)
{
	if (a->size != b->size)
		return a->size < b->size ? -1 : 1;
	return a->addr < b->addr ? -1 : a->addr > b->addr;
}

static int cmp_addr(const mb_va_block *a, const mb_va_block *b)
{
	return a->addr < b->addr ? -1 : a->addr > b->addr;
}

/* libbsd's RB_GENERATE_STATIC uses an undefined __unused on Debian 12: spell it out. */
RB_GENERATE_INTERNAL(mb_va_size_tree, mb_va_block, by_size, cmp_size,
		     __attribute__((unused)) static)
RB_GENERATE_INTERNAL(mb_va_addr_tree, mb_va_block, by_addr, cmp_addr,
		     __attribute__((unused)) static)

void mb_vaspace_init(mb_vaspace *v, int section_fd, uint64_t section_size)
{
	memset(v, 0, sizeof(*v));
	pthread_mutex_init(&v->lock, NULL);
	v->section_fd = section_fd;
	v->section_size = section_size;
	RB_INIT(&v->free_by_size);
	RB_INIT(&v->free_by_addr);
}

void mb_vaspace_fini(mb_vaspace *v)
{
	mb_va_block *b;

	while ((b = RB_MIN(mb_va_addr_tree, &v->free_by_addr)) != NULL) {
		RB_REMOVE(mb_va_addr_tree, &v->free_by_addr, b);
		free(b);
	}
	RB_INIT(&v->free_by_size);
	for (int i = 0; i < v->narenas; i++)
		munmap((void *)v->arenas[i].base, MB_ARENA_SIZE);
	v->narenas = 0;
	pthread_mutex_destroy(&v->lock);
}

static void add_free(mb_vaspace *v, uintptr_t addr, size_t size)
{
	mb_va_block *b;

	if (size == 0 || (b = calloc(1, sizeof(*b))) == NULL)
		return; /* losing track of free address space costs address space, not memory */
	b->addr = addr;
	b->size = size;
	RB_INSERT(mb_va_size_tree, &v->free_by_size, b);
	RB_INSERT(mb_va_addr_tree, &v->free_by_addr, b);
}

static void remove_free(mb_vaspace *v, mb_va_block *b)
{
	RB_REMOVE(mb_va_size_tree, &v->free_by_size, b);
	RB_REMOVE(mb_va_addr_tree, &v->free_by_addr, b);
	free(b);
}

/*
 * Maps the section over fresh address space: claim with an anonymous placeholder first (at want
 * with MAP_FIXED_NOREPLACE, or anywhere 64 KiB aligned), then map the section over it at
 * offset == address. Returns the address or 0.
 */
static uintptr_t map_section(mb_vaspace *v, uintptr_t want, size_t size, int *err)
{
	const int anon = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	uintptr_t base;
	void *p;

	if (want != 0) {
		p = mmap((void *)want, size, PROT_NONE, anon | MAP_FIXED_NOREPLACE, -1, 0);
		if (p == MAP_FAILED || (uintptr_t)p != want) {
			if (p != MAP_FAILED)
				munmap(p, size); /* kernels before 4.17 take the flag as a hint */
			*err = EEXIST;
			return 0;
		}
		base = want;
	} else {
		p = mmap(NULL, size + MB_GRANULARITY, PROT_NONE, anon, -1, 0);
		if (p == MAP_FAILED) {
			*err = ENOMEM;
			return 0;
		}
		uintptr_t start = (uintptr_t)p;
		base = (start + MB_GRANULARITY - 1) & ~(uintptr_t)(MB_GRANULARITY - 1);
		if (base > start)
			munmap(p, base - start);
		if (base + size < start + size + MB_GRANULARITY)
			munmap((void *)(base + size), start + MB_GRANULARITY - base);
	}
	if (base < MB_GRANULARITY || base + size > v->section_size ||
	    mmap((void *)base, size, PROT_NONE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE,
		 v->section_fd, (off_t)base) == MAP_FAILED) {
		munmap((void *)base, size);
		*err = ENOMEM;
		return 0;
	}
	/* A forked child must not share (or keep alive) the parent's memory. */
	madvise((void *)base, size, MADV_DONTFORK);
	return base;
}

static mb_arena *arena_of(mb_vaspace *v, uintptr_t addr)
{
	for (int i = 0; i < v->narenas; i++)
		if (addr >= v->arenas[i].base && addr - v->arenas[i].base < MB_ARENA_SIZE)
			return &v->arenas[i];
	return NULL;
}

/* Takes [want, want+span) out of an arena's free space. 0 or -EEXIST. */
static int take_at(mb_vaspace *v, mb_arena *a, uintptr_t want, size_t span)
{
	uintptr_t end = want + span;
	mb_va_block key = {.addr = want}, *b;

	if (end - a->base > MB_ARENA_SIZE)
		return -EEXIST;
	if (want >= a->bump) {
		add_free(v, a->bump, want - a->bump);
		a->bump = end;
		return 0;
	}
	/* The free block starting at or before want. */
	b = RB_NFIND(mb_va_addr_tree, &v->free_by_addr, &key);
	if (b == NULL || b->addr > want)
		b = b ? RB_PREV(mb_va_addr_tree, &v->free_by_addr, b)
		      : RB_MAX(mb_va_addr_tree, &v->free_by_addr);
	if (b != NULL && b->addr <= want && end <= b->addr + b->size) {
		uintptr_t baddr = b->addr, bend = b->addr + b->size;
		remove_free(v, b);
		add_free(v, baddr, want - baddr);
		add_free(v, end, bend - end);
		return 0;
	}
	/* A block reaching up to the unused tail can be combined with it. */
	if (b != NULL && b->addr <= want && b->addr + b->size == a->bump && end > a->bump) {
		uintptr_t baddr = b->addr;
		remove_free(v, b);
		add_free(v, baddr, want - baddr);
		a->bump = end;
		return 0;
	}
	return -EEXIST;
}

int mb_vaspace_alloc(mb_vaspace *v, uintptr_t want, size_t span, uintptr_t *addr)
{
	mb_va_block key = {.size = span, .addr = 0}, *b;
	int err = ENOMEM;
	int rv = 0;

	if (span == 0 || span % MB_GRANULARITY != 0 || want % MB_GRANULARITY != 0)
		return -EINVAL;
	pthread_mutex_lock(&v->lock);
	if (want != 0) {
		mb_arena *a = arena_of(v, want);
		if (a != NULL) {
			rv = take_at(v, a, want, span);
			if (rv == 0)
				*addr = want;
		} else if ((*addr = map_section(v, want, span, &err)) == 0) {
			rv = -err;
		}
		goto out;
	}
	if (span > MB_ARENA_LARGE) {
		if ((*addr = map_section(v, 0, span, &err)) == 0)
			rv = -err;
		goto out;
	}
	/* Best fit among freed blocks, then the newest arena's tail, then a new arena. */
	b = RB_NFIND(mb_va_size_tree, &v->free_by_size, &key);
	if (b != NULL) {
		uintptr_t baddr = b->addr;
		size_t bsize = b->size;
		remove_free(v, b);
		add_free(v, baddr + span, bsize - span);
		*addr = baddr;
		goto out;
	}
	if (v->narenas > 0) {
		mb_arena *a = &v->arenas[v->narenas - 1];
		if (a->base + MB_ARENA_SIZE - a->bump >= span) {
			*addr = a->bump;
			a->bump += span;
			goto out;
		}
	}
	if (v->narenas >= MB_MAX_ARENAS) {
		rv = -ENOMEM;
		goto out;
	}
	uintptr_t base = map_section(v, 0, MB_ARENA_SIZE, &err);
	if (base == 0) {
		rv = -err;
		goto out;
	}
	v->arenas[v->narenas].base = base;
	v->arenas[v->narenas].bump = base + span;
	v->narenas++;
	*addr = base;
out:
	pthread_mutex_unlock(&v->lock);
	return rv;
}

void mb_vaspace_free(mb_vaspace *v, uintptr_t addr, size_t span)
{
	pthread_mutex_lock(&v->lock);
	if (arena_of(v, addr) != NULL) {
		/* Still the section, so the broker's hole punch already freed the pages; close
		 * them so that a stale pointer faults instead of reading zeros. */
		mprotect((void *)addr, span, PROT_NONE);
		add_free(v, addr, span);
	} else {
		munmap((void *)addr, span);
	}
	pthread_mutex_unlock(&v->lock);
}
