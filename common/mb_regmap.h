/*
 * mb_regmap.h: the map of one client's reservations (regions) and the state of their pages.
 *
 * Used on both sides of the connection: the client keeps one per mb_client (with protections, for
 * VirtualQuery/VirtualProtect), the broker one per session (commit state only, for the ledger and
 * for checking that a client commits only inside its own reservations). Regions never overlap;
 * lookups, inserts and removals are O(log n) in the number of regions (a red-black tree), page
 * operations are O(pages touched).
 *
 * Not thread-safe: the owner serialises access.
 */
#ifndef MB_REGMAP_H
#define MB_REGMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <bsd/sys/tree.h>

#define MB_PAGE_SIZE   ((size_t)4096)
#define MB_PAGE_SHIFT  12
#define MB_GRANULARITY ((size_t)65536) /* reservation granularity */

/* Bits of mb_region.state[page]. */
#define MB_PAGE_COMMITTED 0x01 /* charged to the budget, accessible with prot[page] */
#define MB_PAGE_RESET	  0x02 /* MEM_RESET since the last commit: contents may be discarded */
#define MB_PAGE_DISCARDED 0x04 /* the broker discarded this reset page (MEM_RESET_UNDO fails) */
/* The EMemoryCriticalLevel a page was committed at (0, 1 or 2), in two bits: set by the commit that
 * made the page committed, kept by later commits of the same page, by MEM_RESET and by a discard,
 * cleared with the page. Both sides keep it: the client re-registers each page at its level with a
 * broker that lost its books, and the broker keeps it in its books and snapshot. */
#define MB_PAGE_LEVEL_SHIFT 3
#define MB_PAGE_LEVEL_MASK  0x18
#define MB_PAGE_LEVEL(l)    ((uint8_t)(((unsigned)(l) << MB_PAGE_LEVEL_SHIFT) & MB_PAGE_LEVEL_MASK))
#define MB_PAGE_LEVELS	    4 /* what the bits can hold; levels in use are 0, 1 and 2 */
/* Broker only, while a client re-registers a section it handed back (daemon/readopt.h): a page
 * claimed committed at its level and not booked yet; a claimed page that was refused, until the
 * client is told. Neither is committed or charged. */
#define MB_PAGE_CLAIMED 0x20
#define MB_PAGE_REFUSED 0x40

/* The level bits of a page state. */
static inline int mb_page_level(uint8_t state)
{
	return (state & MB_PAGE_LEVEL_MASK) >> MB_PAGE_LEVEL_SHIFT;
}

/* Pages per chunk of page state. A region's state lives in chunks allocated on first use, so a
 * huge reservation costs a pointer per 16 MiB until pages in it are used, and every walk skips
 * untouched chunks. */
#define MB_CHUNK_SHIFT 12
#define MB_CHUNK_PAGES ((size_t)1 << MB_CHUNK_SHIFT)

typedef struct mb_page_chunk {
	uint32_t nonzero;   /* pages whose state is not 0 */
	uint32_t committed; /* pages with MB_PAGE_COMMITTED */
	uint8_t state[MB_CHUNK_PAGES];
	uint8_t prot[]; /* MB_CHUNK_PAGES more when the map tracks protections */
} mb_page_chunk;

typedef struct mb_region {
	RB_ENTRY(mb_region) link;
	uintptr_t base;		/* 64 KiB aligned */
	size_t size;		/* page multiple: what VirtualQuery reports for the whole region */
	size_t span;		/* size rounded up to 64 KiB: address space the region blocks */
	uint32_t alloc_protect; /* protection given at reserve time (AllocationProtect) */
	size_t committed_pages; /* count of pages with MB_PAGE_COMMITTED */
	size_t committed_at[MB_PAGE_LEVELS]; /* ... of them, by the level they were committed at */
	bool track_protect;		     /* chunks carry a mb_win32 protection code per page */
	size_t nchunks;
	mb_page_chunk **chunks; /* NULL entries: every page of that chunk has state 0 */
	size_t idle_chunks;	/* chunks with state but no committed page (see mb_regmap) */
	void *user;		/* owner's data */
} mb_region;

RB_HEAD(mb_region_tree, mb_region);

typedef struct mb_regmap {
	struct mb_region_tree tree;
	size_t count;			     /* regions */
	size_t reserved_bytes;		     /* sum of region sizes */
	size_t committed_pages;		     /* sum over regions */
	size_t committed_at[MB_PAGE_LEVELS]; /* sum over regions, by level */
	/* Chunks that hold page state but no committed page (only pages reset and then discarded
	 * keep such a chunk alive): the one part of a map's memory its commits do not bound. */
	size_t idle_chunks;
	bool track_protect; /* allocate mb_region.prot */
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

/* State bits (MB_PAGE_*) of one page. */
static inline uint8_t mb_region_state(const mb_region *r, size_t page)
{
	const mb_page_chunk *c = r->chunks[page >> MB_CHUNK_SHIFT];
	return c ? c->state[page & (MB_CHUNK_PAGES - 1)] : 0;
}

/* Protection code of one page (0 when not tracked or never set). */
static inline uint8_t mb_region_prot(const mb_region *r, size_t page)
{
	const mb_page_chunk *c = r->chunks[page >> MB_CHUNK_SHIFT];
	return c && r->track_protect ? c->prot[page & (MB_CHUNK_PAGES - 1)] : 0;
}

/* Number of committed pages among pages [first, first+count) of region. */
size_t mb_region_committed_in(const mb_region *region, size_t first, size_t count);

/* Number of pages among [first, first+count) whose state & mask == want. */
size_t mb_region_count(const mb_region *region, size_t first, size_t count, uint8_t mask,
		       uint8_t want);

/* First page in [from, end) whose state & mask == want, or end. */
size_t mb_region_find(const mb_region *region, size_t from, size_t end, uint8_t mask, uint8_t want);

/* First page in [from, end) whose state & mask != want, or end. */
size_t mb_region_run_end(const mb_region *region, size_t from, size_t end, uint8_t mask,
			 uint8_t want);

/* End (exclusive page index) of the run from `from` that VirtualQuery reports as one: the same
 * committed bit and, for committed pages, the same protection code. */
size_t mb_region_query_run(const mb_region *region, size_t from);

/*
 * The general page update: for every page of [first, first+count) whose state & mask == want,
 * state = (state & ~clear) | set, and its protection code = prot when prot >= 0. Counters of region
 * and map follow. Returns the number of pages that became committed; *lost (may be NULL) receives
 * the number that stopped being committed. -1 (nothing changed) if memory for page state cannot be
 * had.
 */
long mb_region_update(mb_regmap *map, mb_region *region, size_t first, size_t count, uint8_t mask,
		      uint8_t want, uint8_t clear, uint8_t set, int prot, size_t *lost);

/*
 * Marks pages [first, first+count) committed with protection code prot (ignored when the region
 * does not track protections), clears their reset and discarded bits, updates the counters of
 * region and map. Pages not committed before take level (their other bits, claims included, are
 * cleared); pages committed already keep the level they were committed at. Returns the number of
 * pages that were not committed before, or -1 (nothing changed) when there is no memory for the
 * page state.
 */
long mb_region_commit_at(mb_regmap *map, mb_region *region, size_t first, size_t count,
			 uint8_t prot, int level);

/* mb_region_commit_at with level 0 (eTaskCritical). */
long mb_region_commit(mb_regmap *map, mb_region *region, size_t first, size_t count, uint8_t prot);

/* Marks pages decommitted (state 0). Returns the number of pages that were committed before. */
size_t mb_region_decommit(mb_regmap *map, mb_region *region, size_t first, size_t count);

/* Sets the protection code of pages (region must track protections; pages must be committed). */
void mb_region_set_prot(mb_region *region, size_t first, size_t count, uint8_t prot);

/* Address space a region of size bytes blocks: size rounded up to the 64 KiB granularity. The
 * caller makes sure size <= SIZE_MAX - (MB_GRANULARITY - 1). */
static inline size_t mb_span_of(size_t size)
{
	return (size + MB_GRANULARITY - 1) & ~(MB_GRANULARITY - 1);
}

/* Page index of addr in region (addr must lie inside region). */
static inline size_t mb_region_page(const mb_region *region, uintptr_t addr)
{
	return (size_t)((addr - region->base) >> MB_PAGE_SHIFT);
}

#endif /* MB_REGMAP_H */
