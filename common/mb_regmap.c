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
	free(region->state);
	free(region->prot);
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
	map->track_protect = track_protect;
}

void mb_regmap_clear(mb_regmap *map, void (*fn)(mb_region *region, void *arg), void *arg)
{
	mb_region *r, *tmp;

	if (!map)
		return;
	RB_FOREACH_SAFE(r, mb_region_tree, &map->tree, tmp)
	{
		RB_REMOVE(mb_region_tree, &map->tree, r);
		if (fn)
			fn(r, arg);
		region_free(r);
	}
	map->count = 0;
	map->reserved_bytes = 0;
	map->committed_pages = 0;
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
	span = (size + MB_GRANULARITY - 1) & ~(MB_GRANULARITY - 1);
	/* The span's last byte must be addressable: base + span may not wrap (not even to 0). */
	if (span > UINTPTR_MAX - base)
		return -EINVAL;
	if (mb_regmap_span_overlaps(map, base, span))
		return -EEXIST;

	pages = size >> MB_PAGE_SHIFT;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->state = calloc(pages, 1);
	if (map->track_protect)
		r->prot = calloc(pages, 1);
	if (!r->state || (map->track_protect && !r->prot)) {
		region_free(r);
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

size_t mb_region_committed_in(const mb_region *region, size_t first, size_t count)
{
	size_t i, n = 0;

	if (!region || !clamp_pages(region, &first, &count))
		return 0;
	/* A fully committed or fully reserved region answers without scanning. */
	if (region->committed_pages == 0)
		return 0;
	if (region->committed_pages == region->size >> MB_PAGE_SHIFT)
		return count;
	for (i = first; i < first + count; i++)
		n += (region->state[i] & MB_PAGE_COMMITTED) != 0;
	return n;
}

size_t mb_region_commit(mb_regmap *map, mb_region *region, size_t first, size_t count, uint8_t prot)
{
	size_t i, fresh = 0;

	if (!map || !region || !clamp_pages(region, &first, &count))
		return 0;
	for (i = first; i < first + count; i++) {
		if (!(region->state[i] & MB_PAGE_COMMITTED))
			fresh++;
		region->state[i] = MB_PAGE_COMMITTED;
		if (region->prot)
			region->prot[i] = prot;
	}
	region->committed_pages += fresh;
	map->committed_pages += fresh;
	return fresh;
}

size_t mb_region_decommit(mb_regmap *map, mb_region *region, size_t first, size_t count)
{
	size_t i, was = 0;

	if (!map || !region || !clamp_pages(region, &first, &count))
		return 0;
	for (i = first; i < first + count; i++) {
		was += (region->state[i] & MB_PAGE_COMMITTED) != 0;
		region->state[i] = 0;
	}
	region->committed_pages -= was;
	map->committed_pages -= was;
	return was;
}

void mb_region_set_prot(mb_region *region, size_t first, size_t count, uint8_t prot)
{
	size_t i;

	if (!region || !region->prot || !clamp_pages(region, &first, &count))
		return;
	for (i = first; i < first + count; i++)
		region->prot[i] = prot;
}
