/*
 * mb_regmap.h: the map of one client's reservations (regions) and the state of their pages.
 *
 * Used on both sides of the connection: the client keeps one per mb_client (with protections, for
 * VirtualQuery/VirtualProtect), the broker one per session (commit state only, for the ledger and for
 * checking that a client commits only inside its own reservations). Regions never overlap; lookups,
 * inserts and removals are O(log n) in the number of regions (a red-black tree), page operations are
 * O(pages touched).
 *
 * Not thread-safe: the owner serialises access.
 */
#ifndef MB_REGMAP_H
#define MB_REGMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bsd/sys/tree.h>

#define MB_PAGE_SIZE        ((size_t)4096)
#define MB_PAGE_SHIFT       12
#define MB_GRANULARITY      ((size_t)65536) /* reservation granularity */

/* Bits of mb_region.state[page]. */
#define MB_PAGE_COMMITTED   0x01 /* charged to the budget, accessible with prot[page] */
#define MB_PAGE_RESET       0x02 /* MEM_RESET since the last commit: contents may be discarded */
#define MB_PAGE_DISCARDED   0x04 /* the broker discarded this reset page (MEM_RESET_UNDO fails) */

typedef struct mb_region {
	RB_ENTRY(mb_region) link;
	uintptr_t base;         /* 64 KiB aligned */
	size_t size;            /* page multiple: what VirtualQuery reports for the whole region */
	size_t span;            /* size rounded up to 64 KiB: address space the region blocks */
	uint32_t alloc_protect; /* protection given at reserve time (AllocationProtect) */
	size_t committed_pages; /* count of pages with MB_PAGE_COMMITTED */
	uint8_t *state;         /* size / MB_PAGE_SIZE entries of MB_PAGE_* bits */
	uint8_t *prot;          /* NULL when the owner does not track protections; else a
				 * mb_win32 protection code per page (meaningful when committed) */
	void *user;             /* owner's data (the client stores its mapping here) */
} mb_region;

RB_HEAD(mb_region_tree, mb_region);

typedef struct mb_regmap {
	struct mb_region_tree tree;
	size_t count;           /* regions */
	size_t reserved_bytes;  /* sum of region sizes */
	size_t committed_pages; /* sum over regions */
	bool track_protect;     /* allocate mb_region.prot */
} mb_regmap;

/* Initialises an empty map. track_protect: keep a protection code per page. */
void mb_regmap_init(mb_regmap *map, bool track_protect);

/* Removes and frees every region, calling fn(region, arg) first on each when fn is not NULL. */
void mb_regmap_clear(mb_regmap *map, void (*fn)(mb_region *region, void *arg), void *arg);

/*
 * Adds a region [base, base+size) blocking [base, base+span). base must be 64 KiB aligned, size a
 * non-zero page multiple, span = size rounded up to 64 KiB. Returns 0 and the region in *out (may
 * be NULL), -EEXIST if the span overlaps another region's span, -EINVAL on bad arguments, -ENOMEM.
 * All pages start reserved (not committed).
 */
int mb_regmap_insert(mb_regmap *map, uintptr_t base, size_t size, uint32_t alloc_protect,
		     mb_region **out);

/* Unlinks and frees one region. Its committed pages are subtracted from the map's count. */
void mb_regmap_remove(mb_regmap *map, mb_region *region);

/* The region whose [base, base+size) contains addr, or NULL. */
mb_region *mb_regmap_find(const mb_regmap *map, uintptr_t addr);

/* The region whose [base, base+span) contains addr, or NULL (the 64 KiB tail counts as blocked). */
mb_region *mb_regmap_find_span(const mb_regmap *map, uintptr_t addr);

/* The region with the lowest base strictly greater than addr, or NULL. */
mb_region *mb_regmap_next_after(const mb_regmap *map, uintptr_t addr);

/* true if [start, start+len) intersects the span of any region. */
bool mb_regmap_span_overlaps(const mb_regmap *map, uintptr_t start, size_t len);

/* First / next region in address order, for iteration. */
mb_region *mb_regmap_first(const mb_regmap *map);
mb_region *mb_regmap_next(const mb_regmap *map, mb_region *region);

/* Number of committed pages among pages [first, first+count) of region. */
size_t mb_region_committed_in(const mb_region *region, size_t first, size_t count);

/*
 * Marks pages [first, first+count) committed with protection code prot (ignored when the region does
 * not track protections), clears their reset and discarded bits, updates the counters of region and
 * map. Returns the number of pages that were not committed before.
 */
size_t mb_region_commit(mb_regmap *map, mb_region *region, size_t first, size_t count, uint8_t prot);

/* Marks pages decommitted (state 0). Returns the number of pages that were committed before. */
size_t mb_region_decommit(mb_regmap *map, mb_region *region, size_t first, size_t count);

/* Sets the protection code of pages (region must track protections). */
void mb_region_set_prot(mb_region *region, size_t first, size_t count, uint8_t prot);

/* Page index of addr in region (addr must lie inside region). */
static inline size_t mb_region_page(const mb_region *region, uintptr_t addr)
{
	return (size_t)((addr - region->base) >> MB_PAGE_SHIFT);
}

#endif /* MB_REGMAP_H */
