/*
 * mb_regmap.c: the region map, a red-black tree of reservations keyed by base address.
 *
 * The tree never holds overlapping spans, so "the region containing addr" is always the region with
 * the greatest base <= addr (a floor lookup), and "the regions intersecting a range" are that floor
 * and its successors up to the range's end. Both come from RB_NFIND plus one RB_PREV/RB_NEXT step.
 */
#include "mb_regmap.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int mb_region_cmp(const mb_region *a, const mb_region *b)
{
	/* No subtraction: bases are full-width unsigned and the difference would not fit an int. */
	return a->base < b->base ? -1 : a->base > b->base;
}

/*
 * RB_GENERATE_STATIC spelled out: libbsd expands it with __unused, which its cdefs.h leaves
 * undefined (it clashes with a glibc struct member), so the attribute is given directly.
 */
RB_GENERATE_INTERNAL(mb_region_tree, mb_region, link, mb_region_cmp, __attribute__((unused)) static)

/*
 * The tree macros take a non-const head even for lookups; the lookup functions of this file do not
 * modify the tree, so dropping const here is sound.
 */
static struct mb_region_tree *tree_of(const mb_regmap *map)
{
	return (struct mb_region_tree *)&map->tree;
}

/* Smallest base >= addr. */
static mb_region *ceil_of(const mb_regmap *map, uintptr_t addr)
{
	mb_region key = {.base = addr};

	return RB_NFIND(mb_region_tree, tree_of(map), &key);
}

/* Greatest base <= addr. */
static mb_region *floor_of(const mb_regmap *map, uintptr_t addr)
{
	mb_region *r = ceil_of(map, addr);

	if (r && r->base == addr)
		return r;
	if (r)
		return RB_PREV(mb_region_tree, tree_of(map), r);
	return RB_MAX(mb_region_tree, tree_of(map));
}

/*
 * Clamps [*first, *first + *count) to the region's pages. Callers are expected to pass valid ranges
 * (mb_win32_plan_* produce them); clamping keeps a wrong one from writing past the arrays.
 */
static bool clamp_pages(const mb_region *region, size_t *first, size_t *count)
{
	size_t pages = region->size >> MB_PAGE_SHIFT;

	if (*first >= pages || *count == 0)
		return false;
	if (*count > pages - *first)
		*count = pages - *first;
	return true;
}

static void region_free(mb_region *region)
{
	for (size_t i = 0; i < region->nchunks; i++)
		free(region->chunks[i]);
	free(region->chunks);
	free(region);
}

void mb_regmap_init(mb_regmap *map, bool track_protect)
{
	if (!map)
		return;
	RB_INIT(&map->tree);
	map->count = 0;
	map->reserved_bytes = 0;
	map->committed_pages = 0;
	memset(map->committed_at, 0, sizeof(map->committed_at));
	map->idle_chunks = 0;
	map->track_protect = track_protect;
}

void mb_regmap_clear(mb_regmap *map, void (*fn)(mb_region *region, void *arg), void *arg)
{
	mb_region *r, *tmp;

	if (!map)
		return;
	RB_FOREACH_SAFE(r, mb_region_tree, &map->tree, tmp) {
		RB_REMOVE(mb_region_tree, &map->tree, r);
		if (fn)
			fn(r, arg);
		region_free(r);
	}
	map->count = 0;
	map->reserved_bytes = 0;
	map->committed_pages = 0;
	memset(map->committed_at, 0, sizeof(map->committed_at));
	map->idle_chunks = 0;
}

int mb_regmap_insert(mb_regmap *map, uintptr_t base, size_t size, uint32_t alloc_protect,
		     mb_region **out)
{
	mb_region *r;
	size_t span, pages;

	if (!map || base % MB_GRANULARITY != 0 || size == 0 || size % MB_PAGE_SIZE != 0)
		return -EINVAL;
	if (size > SIZE_MAX - (MB_GRANULARITY - 1))
		return -EINVAL;
	span = mb_span_of(size);
	/* The span's last byte must be addressable: base + span may not wrap (not even to 0). */
	if (span > UINTPTR_MAX - base)
		return -EINVAL;
	if (mb_regmap_span_overlaps(map, base, span))
		return -EEXIST;

	pages = size >> MB_PAGE_SHIFT;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->track_protect = map->track_protect;
	r->nchunks = (pages + MB_CHUNK_PAGES - 1) >> MB_CHUNK_SHIFT;
	r->chunks = calloc(r->nchunks, sizeof(*r->chunks));
	if (!r->chunks) {
		free(r);
		return -ENOMEM;
	}
	r->base = base;
	r->size = size;
	r->span = span;
	r->alloc_protect = alloc_protect;
	RB_INSERT(mb_region_tree, &map->tree, r);
	map->count++;
	map->reserved_bytes += size;
	if (out)
		*out = r;
	return 0;
}

void mb_regmap_remove(mb_regmap *map, mb_region *region)
{
	if (!map || !region)
		return;
	RB_REMOVE(mb_region_tree, &map->tree, region);
	map->count--;
	map->reserved_bytes -= region->size;
	map->committed_pages -= region->committed_pages;
	for (int l = 0; l < MB_PAGE_LEVELS; l++)
		map->committed_at[l] -= region->committed_at[l];
	map->idle_chunks -= region->idle_chunks;
	region_free(region);
}

mb_region *mb_regmap_find(const mb_regmap *map, uintptr_t addr)
{
	mb_region *r;

	if (!map)
		return NULL;
	r = floor_of(map, addr);
	return r && addr - r->base < r->size ? r : NULL;
}

mb_region *mb_regmap_find_span(const mb_regmap *map, uintptr_t addr)
{
	mb_region *r;

	if (!map)
		return NULL;
	r = floor_of(map, addr);
	return r && addr - r->base < r->span ? r : NULL;
}

mb_region *mb_regmap_next_after(const mb_regmap *map, uintptr_t addr)
{
	mb_region *r;

	if (!map)
		return NULL;
	r = ceil_of(map, addr);
	if (r && r->base == addr)
		r = RB_NEXT(mb_region_tree, tree_of(map), r);
	return r;
}

bool mb_regmap_span_overlaps(const mb_regmap *map, uintptr_t start, size_t len)
{
	mb_region *r;
	uintptr_t last;

	if (!map || len == 0)
		return false;
	/* A range running past the top of the address space is cut there rather than wrapped. */
	last = len - 1 > UINTPTR_MAX - start ? UINTPTR_MAX : start + (len - 1);

	r = floor_of(map, start);
	if (r && start - r->base < r->span)
		return true;
	r = mb_regmap_next_after(map, start);
	return r && r->base <= last;
}

mb_region *mb_regmap_first(const mb_regmap *map)
{
	if (!map)
		return NULL;
	return RB_MIN(mb_region_tree, tree_of(map));
}

mb_region *mb_regmap_next(const mb_regmap *map, mb_region *region)
{
	if (!map || !region)
		return NULL;
	return RB_NEXT(mb_region_tree, tree_of(map), region);
}

/* Pages [first, first+count) clipped to chunk ci: *lo and *hi (exclusive) within the region. */
static void chunk_bounds(size_t ci, size_t first, size_t end, size_t *lo, size_t *hi)
{
	size_t cs = ci << MB_CHUNK_SHIFT, ce = cs + MB_CHUNK_PAGES;
	*lo = first > cs ? first : cs;
	*hi = end < ce ? end : ce;
}

size_t mb_region_committed_in(const mb_region *region, size_t first, size_t count)
{
	size_t n = 0, end;

	if (!region || !clamp_pages(region, &first, &count))
		return 0;
	/* A fully committed or fully reserved region answers without scanning. */
	if (region->committed_pages == 0)
		return 0;
	if (region->committed_pages == region->size >> MB_PAGE_SHIFT)
		return count;
	end = first + count;
	for (size_t ci = first >> MB_CHUNK_SHIFT; ci <= (end - 1) >> MB_CHUNK_SHIFT; ci++) {
		const mb_page_chunk *c = region->chunks[ci];
		size_t lo, hi;
		if (!c || c->committed == 0)
			continue;
		chunk_bounds(ci, first, end, &lo, &hi);
		if (hi - lo == MB_CHUNK_PAGES || c->committed == MB_CHUNK_PAGES) {
			n += c->committed == MB_CHUNK_PAGES ? hi - lo : c->committed;
			continue;
		}
		for (size_t i = lo; i < hi; i++)
			n += (c->state[i & (MB_CHUNK_PAGES - 1)] & MB_PAGE_COMMITTED) != 0;
	}
	return n;
}

size_t mb_region_count(const mb_region *region, size_t first, size_t count, uint8_t mask,
		       uint8_t want)
{
	size_t n = 0, end;

	if (!region || !clamp_pages(region, &first, &count))
		return 0;
	end = first + count;
	for (size_t ci = first >> MB_CHUNK_SHIFT; ci <= (end - 1) >> MB_CHUNK_SHIFT; ci++) {
		const mb_page_chunk *c = region->chunks[ci];
		size_t lo, hi;
		chunk_bounds(ci, first, end, &lo, &hi);
		if (!c) {
			n += (want == 0) ? hi - lo : 0; /* an absent chunk is all zero */
			continue;
		}
		for (size_t i = lo; i < hi; i++)
			n += (c->state[i & (MB_CHUNK_PAGES - 1)] & mask) == want;
	}
	return n;
}

/* First page in [from, end) where ((state & mask) == want) == match. */
static size_t scan(const mb_region *region, size_t from, size_t end, uint8_t mask, uint8_t want,
		   bool match)
{
	size_t pages = region->size >> MB_PAGE_SHIFT;

	if (end > pages)
		end = pages;
	while (from < end) {
		size_t ci = from >> MB_CHUNK_SHIFT, lo, hi;
		const mb_page_chunk *c = region->chunks[ci];
		chunk_bounds(ci, from, end, &lo, &hi);
		if (!c) {
			if ((want == 0) == match)
				return lo;
			from = hi; /* the whole absent chunk is zero: skip it */
			continue;
		}
		for (size_t i = lo; i < hi; i++)
			if (((c->state[i & (MB_CHUNK_PAGES - 1)] & mask) == want) == match)
				return i;
		from = hi;
	}
	return end;
}

size_t mb_region_find(const mb_region *region, size_t from, size_t end, uint8_t mask, uint8_t want)
{
	return region ? scan(region, from, end, mask, want, true) : end;
}

size_t mb_region_run_end(const mb_region *region, size_t from, size_t end, uint8_t mask,
			 uint8_t want)
{
	return region ? scan(region, from, end, mask, want, false) : end;
}

size_t mb_region_query_run(const mb_region *region, size_t from)
{
	size_t pages = region->size >> MB_PAGE_SHIFT, i;
	bool committed;
	uint8_t prot;

	if (from >= pages)
		return pages;
	committed = (mb_region_state(region, from) & MB_PAGE_COMMITTED) != 0;
	if (!committed)
		return mb_region_find(region, from, pages, MB_PAGE_COMMITTED, MB_PAGE_COMMITTED);
	prot = mb_region_prot(region, from);
	for (i = from + 1; i < pages; i++) {
		if (!(mb_region_state(region, i) & MB_PAGE_COMMITTED))
			break;
		if (region->track_protect && mb_region_prot(region, i) != prot)
			break;
	}
	return i;
}

static mb_page_chunk *chunk_new(const mb_region *region)
{
	return calloc(1, sizeof(mb_page_chunk) + (region->track_protect ? MB_CHUNK_PAGES : 0));
}

long mb_region_update(mb_regmap *map, mb_region *region, size_t first, size_t count, uint8_t mask,
		      uint8_t want, uint8_t clear, uint8_t set, int prot, size_t *lost)
{
	size_t gained = 0, dropped = 0, end;
	/* Committed pages by level: in, out. */
	size_t at_in[MB_PAGE_LEVELS] = {0}, at_out[MB_PAGE_LEVELS] = {0};
	/* Absent chunks are all zero: they need storage only if a zero page matches and changes. */
	bool zero_changes =
	    want == 0 && (set != 0 || (prot >= 0 && region && region->track_protect));

	if (lost)
		*lost = 0;
	if (!map || !region || !clamp_pages(region, &first, &count))
		return 0;
	end = first + count;
	/* Allocate first, so that a failure changes nothing. */
	if (zero_changes)
		for (size_t ci = first >> MB_CHUNK_SHIFT; ci <= (end - 1) >> MB_CHUNK_SHIFT; ci++)
			if (!region->chunks[ci] && !(region->chunks[ci] = chunk_new(region)))
				goto nomem;
	for (size_t ci = first >> MB_CHUNK_SHIFT; ci <= (end - 1) >> MB_CHUNK_SHIFT; ci++) {
		mb_page_chunk *c = region->chunks[ci];
		size_t lo, hi;
		if (!c)
			continue; /* all zero, and zero pages do not change */
		/* A fresh chunk (nonzero 0) was not idle; it is counted below if it stays. */
		bool was_idle = c->nonzero > 0 && c->committed == 0;
		chunk_bounds(ci, first, end, &lo, &hi);
		for (size_t i = lo; i < hi; i++) {
			size_t k = i & (MB_CHUNK_PAGES - 1);
			uint8_t old = c->state[k], st;
			if ((old & mask) != want)
				continue;
			st = (uint8_t)((old & ~clear) | set);
			c->state[k] = st;
			if (prot >= 0 && region->track_protect)
				c->prot[k] = (uint8_t)prot;
			c->nonzero += (st != 0) - (old != 0);
			if ((st ^ old) & (MB_PAGE_COMMITTED | MB_PAGE_LEVEL_MASK)) {
				if (old & MB_PAGE_COMMITTED)
					at_out[mb_page_level(old)]++;
				if (st & MB_PAGE_COMMITTED)
					at_in[mb_page_level(st)]++;
			}
			if ((st ^ old) & MB_PAGE_COMMITTED) {
				if (st & MB_PAGE_COMMITTED) {
					c->committed++;
					gained++;
				} else {
					c->committed--;
					dropped++;
				}
			}
		}
		bool idle = c->nonzero > 0 && c->committed == 0;
		region->idle_chunks += (size_t)idle - (size_t)was_idle;
		map->idle_chunks += (size_t)idle - (size_t)was_idle;
		if (c->nonzero == 0) {
			free(c); /* back to "all zero" */
			region->chunks[ci] = NULL;
		}
	}
	region->committed_pages += gained;
	region->committed_pages -= dropped;
	map->committed_pages += gained;
	map->committed_pages -= dropped;
	for (int l = 0; l < MB_PAGE_LEVELS; l++) {
		region->committed_at[l] += at_in[l] - at_out[l];
		map->committed_at[l] += at_in[l] - at_out[l];
	}
	if (lost)
		*lost = dropped;
	return (long)gained;
nomem:
	/* Give back what was allocated for this call (still all zero). */
	for (size_t ci = first >> MB_CHUNK_SHIFT; ci <= (end - 1) >> MB_CHUNK_SHIFT; ci++)
		if (region->chunks[ci] && region->chunks[ci]->nonzero == 0) {
			free(region->chunks[ci]);
			region->chunks[ci] = NULL;
		}
	return -1;
}

long mb_region_commit_at(mb_regmap *map, mb_region *region, size_t first, size_t count,
			 uint8_t prot, int level)
{
	/* New pages first: only they may need memory for page state, so a failure changes
	 * nothing. Pages committed already touch existing chunks and cannot fail. */
	long gained = mb_region_update(map, region, first, count, MB_PAGE_COMMITTED, 0, 0xff,
				       MB_PAGE_COMMITTED | MB_PAGE_LEVEL(level), prot, NULL);
	if (gained < 0)
		return -1;
	mb_region_update(map, region, first, count, MB_PAGE_COMMITTED, MB_PAGE_COMMITTED,
			 MB_PAGE_RESET | MB_PAGE_DISCARDED, 0, prot, NULL);
	return gained;
}

long mb_region_commit(mb_regmap *map, mb_region *region, size_t first, size_t count, uint8_t prot)
{
	return mb_region_commit_at(map, region, first, count, prot, 0);
}

size_t mb_region_decommit(mb_regmap *map, mb_region *region, size_t first, size_t count)
{
	size_t lost = 0;
	mb_region_update(map, region, first, count, 0, 0, 0xff, 0, -1, &lost);
	return lost;
}

void mb_region_set_prot(mb_region *region, size_t first, size_t count, uint8_t prot)
{
	size_t end;

	if (!region || !region->track_protect || !clamp_pages(region, &first, &count))
		return;
	end = first + count;
	/* Protections matter only on committed pages, which always have a chunk. */
	for (size_t ci = first >> MB_CHUNK_SHIFT; ci <= (end - 1) >> MB_CHUNK_SHIFT; ci++) {
		mb_page_chunk *c = region->chunks[ci];
		size_t lo, hi;
		if (!c)
			continue;
		chunk_bounds(ci, first, end, &lo, &hi);
		for (size_t i = lo; i < hi; i++)
			c->prot[i & (MB_CHUNK_PAGES - 1)] = prot;
	}
}
