/*
 * unit_regmap.c: the region map (common/mb_regmap.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "mb_regmap.h"

#define KB ((size_t)1024)
#define PG MB_PAGE_SIZE
#define GR MB_GRANULARITY

static mb_region *ins(mb_regmap *map, uintptr_t base, size_t size)
{
	mb_region *r = NULL;

	assert_int_equal(mb_regmap_insert(map, base, size, 0x04, &r), 0);
	assert_non_null(r);
	return r;
}

static void test_empty(void **state)
{
	mb_regmap map;

	(void)state;
	mb_regmap_init(&map, true);
	assert_int_equal(map.count, 0);
	assert_int_equal(map.reserved_bytes, 0);
	assert_int_equal(map.committed_pages, 0);
	assert_true(map.track_protect);
	assert_null(mb_regmap_first(&map));
	assert_null(mb_regmap_find(&map, 0));
	assert_null(mb_regmap_find(&map, UINTPTR_MAX));
	assert_null(mb_regmap_find_span(&map, 0x10000));
	assert_null(mb_regmap_next_after(&map, 0));
	assert_false(mb_regmap_span_overlaps(&map, 0, SIZE_MAX));
	mb_regmap_clear(&map, NULL, NULL);
	assert_int_equal(map.count, 0);
}

static void test_null_args(void **state)
{
	mb_region *r = NULL;
	mb_regmap map;

	(void)state;
	mb_regmap_init(NULL, false);
	mb_regmap_clear(NULL, NULL, NULL);
	mb_regmap_remove(NULL, NULL);
	assert_int_equal(mb_regmap_insert(NULL, 0x10000, PG, 0, &r), -EINVAL);
	assert_null(r);
	assert_null(mb_regmap_find(NULL, 0x10000));
	assert_null(mb_regmap_find_span(NULL, 0x10000));
	assert_null(mb_regmap_next_after(NULL, 0));
	assert_false(mb_regmap_span_overlaps(NULL, 0, 1));
	assert_null(mb_regmap_first(NULL));
	assert_null(mb_regmap_next(NULL, NULL));
	assert_int_equal(mb_region_committed_in(NULL, 0, 1), 0);

	mb_regmap_init(&map, false);
	r = ins(&map, 0x10000, 4 * PG);
	mb_regmap_remove(&map, NULL);
	assert_int_equal(map.count, 1);
	assert_int_equal(mb_region_commit(NULL, r, 0, 1, 0), 0);
	assert_int_equal(mb_region_commit(&map, NULL, 0, 1, 0), 0);
	assert_int_equal(mb_region_decommit(NULL, r, 0, 1), 0);
	assert_int_equal(mb_region_decommit(&map, NULL, 0, 1), 0);
	assert_int_equal(r->committed_pages, 0);
	mb_region_set_prot(NULL, 0, 1, 1);
	assert_null(mb_regmap_next(&map, NULL));
	mb_regmap_clear(&map, NULL, NULL);
}

static void test_insert_fields(void **state)
{
	mb_regmap map;
	mb_region *r = NULL;
	size_t i;

	(void)state;
	mb_regmap_init(&map, true);
	assert_int_equal(mb_regmap_insert(&map, 0x30000, 17 * PG, 0x40, &r), 0);
	assert_non_null(r);
	assert_int_equal(r->base, 0x30000);
	assert_int_equal(r->size, 17 * PG);
	assert_int_equal(r->span, 2 * GR);
	assert_int_equal(r->alloc_protect, 0x40);
	assert_int_equal(r->committed_pages, 0);
	assert_non_null(r->chunks);
	assert_true(r->track_protect);
	assert_null(r->user);
	for (i = 0; i < 17; i++) {
		assert_int_equal(mb_region_state(r, i), 0);
		assert_int_equal(mb_region_prot(r, i), 0);
	}
	assert_int_equal(map.count, 1);
	assert_int_equal(map.reserved_bytes, 17 * PG);
	/* out may be NULL */
	assert_int_equal(mb_regmap_insert(&map, 0x100000, GR, 0x04, NULL), 0);
	assert_int_equal(map.count, 2);
	assert_int_equal(map.reserved_bytes, 17 * PG + GR);
	r = mb_regmap_find(&map, 0x100000);
	assert_non_null(r);
	assert_int_equal(r->span, GR);
	mb_regmap_clear(&map, NULL, NULL);

	/* Without protection tracking there is no prot array. */
	mb_regmap_init(&map, false);
	r = ins(&map, 0x10000, PG);
	assert_false(r->track_protect);
	assert_non_null(r->chunks);
	assert_int_equal(r->span, GR);
	mb_regmap_clear(&map, NULL, NULL);
}

static void test_insert_invalid(void **state)
{
	mb_regmap map;
	mb_region *r = (mb_region *)&map; /* must stay untouched on failure */

	(void)state;
	mb_regmap_init(&map, true);
	assert_int_equal(mb_regmap_insert(&map, 0x11000, PG, 0, &r), -EINVAL);	/* unaligned */
	assert_int_equal(mb_regmap_insert(&map, 0x10001, PG, 0, &r), -EINVAL);	/* unaligned */
	assert_int_equal(mb_regmap_insert(&map, 0x10000, 0, 0, &r), -EINVAL);	/* empty */
	assert_int_equal(mb_regmap_insert(&map, 0x10000, 100, 0, &r), -EINVAL); /* not pages */
	assert_int_equal(mb_regmap_insert(&map, 0x10000, PG + 1, 0, &r), -EINVAL);
	/* Sizes whose 64 KiB round-up overflows. */
	assert_int_equal(mb_regmap_insert(&map, 0x10000, SIZE_MAX & ~(PG - 1), 0, &r), -EINVAL);
	assert_int_equal(mb_regmap_insert(&map, 0, SIZE_MAX & ~(PG - 1), 0, &r), -EINVAL);
	/* Spans wrapping past the top of the address space (even exactly to 0). */
	assert_int_equal(mb_regmap_insert(&map, UINTPTR_MAX & ~(uintptr_t)(GR - 1), 2 * GR, 0, &r),
			 -EINVAL);
	assert_int_equal(mb_regmap_insert(&map, UINTPTR_MAX & ~(uintptr_t)(GR - 1), GR, 0, &r),
			 -EINVAL);
	assert_int_equal(mb_regmap_insert(&map, UINTPTR_MAX & ~(uintptr_t)(GR - 1), PG, 0, &r),
			 -EINVAL);
	assert_int_equal(mb_regmap_insert(&map, 0x10000, SIZE_MAX - GR + 1, 0, &r), -EINVAL);
	assert_ptr_equal(r, (mb_region *)&map);
	assert_int_equal(map.count, 0);
	assert_int_equal(map.reserved_bytes, 0);
	assert_null(mb_regmap_first(&map));

	/* The highest span accepted ends one granule below 2^64, which is not representable. */
	assert_int_equal(
	    mb_regmap_insert(&map, (UINTPTR_MAX & ~(uintptr_t)(GR - 1)) - GR, GR, 0, &r), 0);
	assert_int_equal(r->base, (UINTPTR_MAX & ~(uintptr_t)(GR - 1)) - GR);
	assert_ptr_equal(mb_regmap_find(&map, UINTPTR_MAX - GR), r);
	assert_null(mb_regmap_find(&map, UINTPTR_MAX));
	assert_null(mb_regmap_next_after(&map, UINTPTR_MAX));
	assert_true(mb_regmap_span_overlaps(&map, UINTPTR_MAX - GR, SIZE_MAX));
	assert_false(mb_regmap_span_overlaps(&map, UINTPTR_MAX - GR + 1, SIZE_MAX));
	mb_regmap_clear(&map, NULL, NULL);
}

static void test_insert_overlap(void **state)
{
	mb_regmap map;
	mb_region *r;

	(void)state;
	mb_regmap_init(&map, false);
	ins(&map, 0x100000, PG);      /* span 0x100000-0x10ffff */
	ins(&map, 0x200000, GR + PG); /* span 0x200000-0x21ffff */
	ins(&map, 0x110000, PG);      /* adjacent to the first span: fine */
	assert_int_equal(map.count, 3);

	r = NULL;
	assert_int_equal(mb_regmap_insert(&map, 0x100000, PG, 0, &r), -EEXIST); /* same base */
	assert_null(r);
	assert_int_equal(mb_regmap_insert(&map, 0x110000, 2 * GR, 0, NULL), -EEXIST);
	/* Inside the 64 KiB tail of the second region's span. */
	assert_int_equal(mb_regmap_insert(&map, 0x210000, PG, 0, NULL), -EEXIST);
	/* Starting before and covering an existing region. */
	assert_int_equal(mb_regmap_insert(&map, 0x1f0000, 2 * GR, 0, NULL), -EEXIST);
	assert_int_equal(mb_regmap_insert(&map, 0xf0000, GR + PG, 0, NULL), -EEXIST);
	assert_int_equal(mb_regmap_insert(&map, 0x10000, 0x400000, 0, NULL), -EEXIST);
	/* Right below the first: ends exactly at its base. */
	assert_int_equal(mb_regmap_insert(&map, 0xf0000, GR, 0, NULL), 0);
	assert_int_equal(mb_regmap_insert(&map, 0x220000, PG, 0, NULL), 0);
	assert_int_equal(map.count, 5);
	assert_int_equal(map.reserved_bytes, PG + GR + PG + PG + GR + PG);
	mb_regmap_clear(&map, NULL, NULL);
}

static void test_find(void **state)
{
	mb_regmap map;
	mb_region *a, *b, *c;

	(void)state;
	mb_regmap_init(&map, false);
	a = ins(&map, 0x100000, 3 * PG);
	b = ins(&map, 0x110000, GR);
	c = ins(&map, 0x400000, 20 * PG);

	assert_null(mb_regmap_find(&map, 0));
	assert_null(mb_regmap_find(&map, 0xfffff));
	assert_ptr_equal(mb_regmap_find(&map, 0x100000), a);
	assert_ptr_equal(mb_regmap_find(&map, 0x100000 + 3 * PG - 1), a);
	assert_null(mb_regmap_find(&map, 0x100000 + 3 * PG)); /* tail of the span */
	assert_null(mb_regmap_find(&map, 0x10ffff));
	assert_ptr_equal(mb_regmap_find_span(&map, 0x100000 + 3 * PG), a);
	assert_ptr_equal(mb_regmap_find_span(&map, 0x10ffff), a);
	assert_ptr_equal(mb_regmap_find(&map, 0x110000), b);
	assert_ptr_equal(mb_regmap_find(&map, 0x11ffff), b);
	assert_ptr_equal(mb_regmap_find_span(&map, 0x11ffff), b);
	assert_null(mb_regmap_find(&map, 0x120000));
	assert_null(mb_regmap_find_span(&map, 0x120000));
	assert_ptr_equal(mb_regmap_find(&map, 0x400000 + 20 * PG - 1), c);
	assert_null(mb_regmap_find(&map, 0x400000 + 20 * PG));
	assert_ptr_equal(mb_regmap_find_span(&map, 0x41ffff), c);
	assert_null(mb_regmap_find_span(&map, 0x420000));
	assert_null(mb_regmap_find(&map, UINTPTR_MAX));
	assert_null(mb_regmap_find_span(&map, UINTPTR_MAX));

	assert_ptr_equal(mb_regmap_next_after(&map, 0), a);
	assert_ptr_equal(mb_regmap_next_after(&map, 0xfffff), a);
	assert_ptr_equal(mb_regmap_next_after(&map, 0x100000), b);
	assert_ptr_equal(mb_regmap_next_after(&map, 0x101000), b);
	assert_ptr_equal(mb_regmap_next_after(&map, 0x110000), c);
	assert_ptr_equal(mb_regmap_next_after(&map, 0x3fffff), c);
	assert_null(mb_regmap_next_after(&map, 0x400000));
	assert_null(mb_regmap_next_after(&map, UINTPTR_MAX));

	assert_ptr_equal(mb_regmap_first(&map), a);
	assert_ptr_equal(mb_regmap_next(&map, a), b);
	assert_ptr_equal(mb_regmap_next(&map, b), c);
	assert_null(mb_regmap_next(&map, c));
	mb_regmap_clear(&map, NULL, NULL);
}

static void test_span_overlaps(void **state)
{
	mb_regmap map;

	(void)state;
	mb_regmap_init(&map, false);
	ins(&map, 0x100000, PG);     /* span [0x100000, 0x110000) */
	ins(&map, 0x300000, 2 * GR); /* span [0x300000, 0x320000) */

	assert_false(mb_regmap_span_overlaps(&map, 0x100000, 0)); /* empty range */
	assert_false(mb_regmap_span_overlaps(&map, 0, 0x100000));
	assert_true(mb_regmap_span_overlaps(&map, 0, 0x100001));
	assert_true(mb_regmap_span_overlaps(&map, 0x100000, 1));
	assert_true(mb_regmap_span_overlaps(&map, 0x10ffff, 1)); /* in the tail */
	assert_false(mb_regmap_span_overlaps(&map, 0x110000, 0x1f0000));
	assert_true(mb_regmap_span_overlaps(&map, 0x110000, 0x1f0001));
	assert_true(mb_regmap_span_overlaps(&map, 0x310000, 1));
	assert_true(mb_regmap_span_overlaps(&map, 0x2fffff, 2));
	assert_false(mb_regmap_span_overlaps(&map, 0x320000, SIZE_MAX));
	assert_true(mb_regmap_span_overlaps(&map, 0x31ffff, SIZE_MAX));
	assert_true(mb_regmap_span_overlaps(&map, 0, SIZE_MAX));
	assert_false(mb_regmap_span_overlaps(&map, UINTPTR_MAX, SIZE_MAX));
	assert_false(mb_regmap_span_overlaps(&map, UINTPTR_MAX, 1));
	mb_regmap_clear(&map, NULL, NULL);
}

static void test_commit_decommit(void **state)
{
	mb_regmap map;
	mb_region *a, *b;
	size_t i;

	(void)state;
	mb_regmap_init(&map, true);
	a = ins(&map, 0x100000, 8 * PG);
	b = ins(&map, 0x200000, 4 * PG);

	assert_int_equal(mb_region_commit(&map, a, 2, 3, 7), 3);
	assert_int_equal(a->committed_pages, 3);
	assert_int_equal(map.committed_pages, 3);
	for (i = 0; i < 8; i++) {
		bool in = i >= 2 && i < 5;

		assert_int_equal(mb_region_state(a, i), in ? MB_PAGE_COMMITTED : 0);
		assert_int_equal(mb_region_prot(a, i), in ? 7 : 0);
	}
	assert_int_equal(mb_region_committed_in(a, 0, 8), 3);
	assert_int_equal(mb_region_committed_in(a, 0, 2), 0);
	assert_int_equal(mb_region_committed_in(a, 1, 2), 1);
	assert_int_equal(mb_region_committed_in(a, 4, 4), 1);
	assert_int_equal(mb_region_committed_in(a, 2, 3), 3);
	assert_int_equal(mb_region_committed_in(a, 0, 0), 0);

	/* Recommitting counts only fresh pages, and replaces the protection. */
	assert_int_equal(mb_region_commit(&map, a, 0, 4, 2), 2);
	assert_int_equal(a->committed_pages, 5);
	assert_int_equal(map.committed_pages, 5);
	assert_int_equal(mb_region_prot(a, 3), 2);
	assert_int_equal(mb_region_prot(a, 4), 7);

	assert_int_equal(mb_region_commit(&map, b, 0, 4, 1), 4);
	assert_int_equal(map.committed_pages, 9);
	assert_int_equal(mb_region_committed_in(b, 0, 4), 4);
	assert_int_equal(mb_region_committed_in(b, 1, 2), 2);

	/* Commit clears the reset and discarded bits. */
	mb_region_update(&map, a, 0, 1, 0, 0, 0, MB_PAGE_RESET, -1, NULL);
	mb_region_update(&map, a, 1, 1, 0, 0, 0, MB_PAGE_RESET | MB_PAGE_DISCARDED, -1, NULL);
	assert_int_equal(mb_region_commit(&map, a, 0, 2, 4), 0);
	assert_int_equal(mb_region_state(a, 0), MB_PAGE_COMMITTED);
	assert_int_equal(mb_region_state(a, 1), MB_PAGE_COMMITTED);

	/* Decommit returns the formerly committed count and zeroes the state. */
	mb_region_update(&map, a, 4, 1, 0, 0, 0, MB_PAGE_RESET, -1, NULL);
	assert_int_equal(mb_region_decommit(&map, a, 3, 5), 2);
	assert_int_equal(a->committed_pages, 3);
	assert_int_equal(map.committed_pages, 7);
	for (i = 3; i < 8; i++)
		assert_int_equal(mb_region_state(a, i), 0);
	assert_int_equal(mb_region_decommit(&map, a, 3, 5), 0);
	assert_int_equal(map.committed_pages, 7);

	/* set_prot touches only the given pages. */
	mb_region_set_prot(a, 1, 1, 5);
	assert_int_equal(mb_region_prot(a, 0), 4);
	assert_int_equal(mb_region_prot(a, 1), 5);
	assert_int_equal(mb_region_prot(a, 2), 2);

	/* Out-of-range page indices are clamped rather than written past the arrays. */
	assert_int_equal(mb_region_commit(&map, a, 6, SIZE_MAX, 3), 2);
	assert_int_equal(a->committed_pages, 5);
	assert_int_equal(mb_region_commit(&map, a, 8, 1, 3), 0);
	assert_int_equal(mb_region_commit(&map, a, SIZE_MAX, SIZE_MAX, 3), 0);
	assert_int_equal(mb_region_committed_in(a, 7, SIZE_MAX), 1);
	assert_int_equal(mb_region_committed_in(a, SIZE_MAX, 1), 0);
	mb_region_set_prot(a, 7, SIZE_MAX, 6);
	assert_int_equal(mb_region_prot(a, 7), 6);
	assert_int_equal(mb_region_decommit(&map, a, 7, SIZE_MAX), 1);
	assert_int_equal(mb_region_decommit(&map, a, SIZE_MAX, 2), 0);
	assert_int_equal(a->committed_pages, 4);
	assert_int_equal(map.committed_pages, 8);

	/* Remove subtracts the region's pages from the map. */
	mb_regmap_remove(&map, b);
	assert_int_equal(map.count, 1);
	assert_int_equal(map.committed_pages, 4);
	assert_int_equal(map.reserved_bytes, 8 * PG);
	assert_null(mb_regmap_find(&map, 0x200000));
	mb_regmap_remove(&map, a);
	assert_int_equal(map.count, 0);
	assert_int_equal(map.committed_pages, 0);
	assert_int_equal(map.reserved_bytes, 0);
	assert_null(mb_regmap_first(&map));
}

static void test_untracked_prot(void **state)
{
	mb_regmap map;
	mb_region *a;

	(void)state;
	mb_regmap_init(&map, false);
	a = ins(&map, 0x100000, 4 * PG);
	assert_int_equal(mb_region_commit(&map, a, 0, 4, 3), 4); /* prot ignored */
	mb_region_set_prot(a, 0, 4, 2);				 /* no-op */
	assert_false(a->track_protect);
	assert_int_equal(mb_region_committed_in(a, 0, 4), 4);
	assert_int_equal(map.committed_pages, 4);
	mb_regmap_clear(&map, NULL, NULL);
	assert_int_equal(map.committed_pages, 0);
}

struct clear_seen {
	size_t calls;
	uintptr_t last_base;
	bool ordered;
	size_t user_sum;
};

static void on_clear(mb_region *r, void *arg)
{
	struct clear_seen *s = arg;

	if (s->calls && r->base <= s->last_base)
		s->ordered = false;
	s->last_base = r->base;
	s->calls++;
	s->user_sum += (size_t)(uintptr_t)r->user;
}

static void test_clear(void **state)
{
	struct clear_seen seen = {.ordered = true};
	mb_regmap map;
	mb_region *r;

	(void)state;
	mb_regmap_init(&map, true);
	r = ins(&map, 0x500000, PG);
	r->user = (void *)(uintptr_t)1;
	r = ins(&map, 0x100000, PG);
	r->user = (void *)(uintptr_t)10;
	r = ins(&map, 0x300000, 3 * PG);
	r->user = (void *)(uintptr_t)100;
	mb_region_commit(&map, r, 0, 3, 1);
	mb_regmap_clear(&map, on_clear, &seen);
	assert_int_equal(seen.calls, 3);
	assert_int_equal(seen.user_sum, 111);
	assert_true(seen.ordered);
	assert_int_equal(map.count, 0);
	assert_int_equal(map.reserved_bytes, 0);
	assert_int_equal(map.committed_pages, 0);
	assert_null(mb_regmap_first(&map));
	assert_null(mb_regmap_find(&map, 0x300000));
	/* Reusable after clear. */
	ins(&map, 0x300000, PG);
	assert_int_equal(map.count, 1);
	mb_regmap_clear(&map, NULL, NULL);
}

#define MANY 100000

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

static void test_many(void **state)
{
	mb_regmap map;
	size_t *order, i, n, reserved = 0, committed = 0, pages_of;
	mb_region *r, *prev;

	(void)state;
	order = malloc(MANY * sizeof(*order));
	assert_non_null(order);
	for (i = 0; i < MANY; i++)
		order[i] = i;
	for (i = MANY - 1; i > 0; i--) {
		size_t j = rng() % (i + 1), t = order[i];

		order[i] = order[j];
		order[j] = t;
	}

	/* Region k sits at (2k + 1) * 128 KiB with 1..32 pages, leaving gaps between spans. */
	mb_regmap_init(&map, true);
	for (i = 0; i < MANY; i++) {
		size_t k = order[i];
		uintptr_t base = (uintptr_t)(2 * k + 1) * 2 * GR;
		size_t size = (k % 32 + 1) * PG;

		r = ins(&map, base, size);
		reserved += size;
		if (k % 3 == 0)
			committed += mb_region_commit(&map, r, 0, k % 32 + 1, (uint8_t)(k % 5));
	}
	assert_int_equal(map.count, MANY);
	assert_int_equal(map.reserved_bytes, reserved);
	assert_int_equal(map.committed_pages, committed);

	/* Every duplicate is refused and leaves the counts alone. */
	for (i = 0; i < MANY; i += 997)
		assert_int_equal(
		    mb_regmap_insert(&map, (uintptr_t)(2 * i + 1) * 2 * GR, PG, 0, NULL), -EEXIST);
	assert_int_equal(map.count, MANY);

	for (i = 0; i < MANY; i++) {
		uintptr_t base = (uintptr_t)(2 * i + 1) * 2 * GR;
		size_t size = (i % 32 + 1) * PG;

		r = mb_regmap_find(&map, base + size - 1);
		assert_non_null(r);
		assert_int_equal(r->base, base);
		assert_ptr_equal(mb_regmap_find(&map, base), r);
		assert_null(mb_regmap_find(&map, base + size));
		assert_null(mb_regmap_find(&map, base - 1));
		assert_int_equal(r->span, size > GR ? 2 * GR : GR);
		assert_ptr_equal(mb_regmap_find_span(&map, base + r->span - 1), r);
		assert_null(mb_regmap_find_span(&map, base + r->span));
		if (i + 1 < MANY)
			assert_int_equal(mb_regmap_next_after(&map, base)->base, base + 4 * GR);
		else
			assert_null(mb_regmap_next_after(&map, base));
	}

	/* In-order iteration visits every region once, sorted. */
	n = 0;
	prev = NULL;
	for (r = mb_regmap_first(&map); r; r = mb_regmap_next(&map, r)) {
		if (prev)
			assert_true(prev->base < r->base);
		prev = r;
		n++;
	}
	assert_int_equal(n, MANY);

	/* Remove the even ones in shuffled order. */
	for (i = 0; i < MANY; i++) {
		size_t k = order[i];

		if (k % 2)
			continue;
		r = mb_regmap_find(&map, (uintptr_t)(2 * k + 1) * 2 * GR);
		assert_non_null(r);
		pages_of = k % 32 + 1;
		reserved -= pages_of * PG;
		committed -= r->committed_pages;
		assert_int_equal(r->committed_pages, k % 3 == 0 ? pages_of : 0);
		mb_regmap_remove(&map, r);
	}
	assert_int_equal(map.count, MANY / 2);
	assert_int_equal(map.reserved_bytes, reserved);
	assert_int_equal(map.committed_pages, committed);
	for (i = 0; i < MANY; i++) {
		uintptr_t base = (uintptr_t)(2 * i + 1) * 2 * GR;

		if (i % 2 == 0) {
			assert_null(mb_regmap_find(&map, base));
			assert_null(mb_regmap_find_span(&map, base));
		} else {
			assert_non_null(mb_regmap_find(&map, base));
		}
	}
	n = 0;
	for (r = mb_regmap_first(&map); r; r = mb_regmap_next(&map, r))
		n++;
	assert_int_equal(n, MANY / 2);

	mb_regmap_clear(&map, NULL, NULL);
	assert_int_equal(map.count, 0);
	assert_int_equal(map.reserved_bytes, 0);
	assert_int_equal(map.committed_pages, 0);
	free(order);
}

/*
 * A reservation of 64 TiB with a few committed pages: page state exists only where pages are used
 * (chunks of MB_CHUNK_PAGES), walks skip untouched chunks, and chunks go away when their pages are
 * all zero again. Regression for a client reserving terabytes to make the broker allocate and
 * scan a byte per page.
 */
static void test_huge_sparse_region(void **state)
{
	const size_t pages = ((size_t)64 << 40) >> MB_PAGE_SHIFT;
	const size_t far = pages - 3;
	mb_regmap map;
	mb_region *r;
	size_t allocated = 0, lost = 0;

	(void)state;
	mb_regmap_init(&map, true);
	r = ins(&map, (uintptr_t)1 << 40, (size_t)64 << 40);
	assert_int_equal(r->nchunks, pages / MB_CHUNK_PAGES);
	for (size_t i = 0; i < r->nchunks; i++)
		allocated += r->chunks[i] != NULL;
	assert_int_equal(allocated, 0);

	/* Two runs far apart, one straddling a chunk boundary. */
	assert_int_equal(mb_region_commit(&map, r, MB_CHUNK_PAGES - 2, 4, 5), 4);
	assert_int_equal(mb_region_commit(&map, r, far, 3, 6), 3);
	allocated = 0;
	for (size_t i = 0; i < r->nchunks; i++)
		allocated += r->chunks[i] != NULL;
	assert_int_equal(allocated, 3);
	assert_int_equal(mb_region_committed_in(r, 0, pages), 7);
	assert_int_equal(map.committed_pages, 7);
	assert_int_equal(mb_region_count(r, 0, pages, MB_PAGE_COMMITTED, 0), pages - 7);

	/* Runs and finds cross absent chunks in one step each. */
	assert_int_equal(mb_region_find(r, 0, pages, MB_PAGE_COMMITTED, MB_PAGE_COMMITTED),
			 MB_CHUNK_PAGES - 2);
	assert_int_equal(
	    mb_region_run_end(r, MB_CHUNK_PAGES - 2, pages, MB_PAGE_COMMITTED, MB_PAGE_COMMITTED),
	    MB_CHUNK_PAGES + 2);
	assert_int_equal(
	    mb_region_find(r, MB_CHUNK_PAGES + 2, pages, MB_PAGE_COMMITTED, MB_PAGE_COMMITTED),
	    far);
	assert_int_equal(mb_region_query_run(r, MB_CHUNK_PAGES + 2), far);
	assert_int_equal(mb_region_query_run(r, far), pages);
	assert_int_equal(mb_region_prot(r, far + 1), 6);

	/* Conditional update: only reset pages change. */
	mb_region_update(&map, r, far, 1, 0, 0, 0, MB_PAGE_RESET, -1, NULL);
	assert_int_equal(mb_region_update(&map, r, 0, pages, MB_PAGE_RESET, MB_PAGE_RESET,
					  MB_PAGE_COMMITTED, MB_PAGE_DISCARDED, -1, &lost),
			 0);
	assert_int_equal(lost, 1);
	assert_int_equal(mb_region_state(r, far), MB_PAGE_RESET | MB_PAGE_DISCARDED);
	assert_int_equal(map.committed_pages, 6);
	/* Its chunk now holds state but nothing committed: the one kind of chunk commits do not
	 * bound, counted so that the broker can. */
	assert_int_equal(map.idle_chunks, 0); /* pages far+1 and far+2 are still committed */
	assert_int_equal(mb_region_update(&map, r, far + 1, 2, 0, 0, MB_PAGE_COMMITTED,
					  MB_PAGE_DISCARDED, -1, &lost),
			 0);
	assert_int_equal(lost, 2);
	assert_int_equal(map.idle_chunks, 1);
	assert_int_equal(r->idle_chunks, 1);
	/* Committed again: no longer idle. */
	assert_int_equal(mb_region_commit(&map, r, far, 1, 6), 1);
	assert_int_equal(map.idle_chunks, 0);
	assert_int_equal(mb_region_update(&map, r, far, 1, 0, 0, MB_PAGE_COMMITTED,
					  MB_PAGE_DISCARDED, -1, &lost),
			 0);
	assert_int_equal(map.idle_chunks, 1);

	/* Decommitting everything frees every chunk. */
	assert_int_equal(mb_region_decommit(&map, r, 0, pages),
			 4); /* the first run; the far pages were discarded */
	allocated = 0;
	for (size_t i = 0; i < r->nchunks; i++)
		allocated += r->chunks[i] != NULL;
	assert_int_equal(allocated, 0);
	assert_int_equal(map.committed_pages, 0);
	assert_int_equal(map.idle_chunks, 0);
	assert_int_equal(mb_region_state(r, far), 0);

	/* Removing a region takes its idle chunks off the map's count. */
	assert_int_equal(mb_region_commit(&map, r, 0, 1, 5), 1);
	mb_region_update(&map, r, 0, 1, 0, 0, MB_PAGE_COMMITTED, MB_PAGE_DISCARDED, -1, NULL);
	assert_int_equal(map.idle_chunks, 1);
	mb_regmap_remove(&map, r);
	assert_int_equal(map.idle_chunks, 0);
	mb_regmap_clear(&map, NULL, NULL);
}

/* The level each page was committed at: set by the commit that committed it, kept by later
 * commits, MEM_RESET and a discard, gone with a decommit; counted per level. */
static void test_levels(void **state)
{
	mb_regmap map;
	size_t lost = 0;

	(void)state;
	mb_regmap_init(&map, true);
	mb_region *r = ins(&map, 0x100000, 16 * PG);
	mb_region *q = ins(&map, 0x200000, 16 * PG);
	assert_int_equal(mb_region_commit_at(&map, r, 0, 4, 3, 1), 4);
	assert_int_equal(mb_region_commit_at(&map, r, 2, 6, 3, 2), 4); /* 2 and 3 were at 1 */
	assert_int_equal(mb_region_commit(&map, q, 0, 2, 3), 2);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(mb_page_level(mb_region_state(r, i)), 1);
	for (size_t i = 4; i < 8; i++)
		assert_int_equal(mb_page_level(mb_region_state(r, i)), 2);
	assert_int_equal(r->committed_at[1], 4);
	assert_int_equal(r->committed_at[2], 4);
	assert_int_equal(map.committed_at[0], 2);
	assert_int_equal(map.committed_at[1], 4);
	assert_int_equal(map.committed_at[2], 4);
	/* A run of one level ends where the level changes. */
	const uint8_t m = MB_PAGE_COMMITTED | MB_PAGE_LEVEL_MASK;
	assert_int_equal(mb_region_run_end(r, 0, 16, m, MB_PAGE_COMMITTED | MB_PAGE_LEVEL(1)), 4);
	/* MEM_RESET and a discard keep it; a commit after the discard takes the new one. */
	mb_region_update(&map, r, 4, 1, 0, 0, 0, MB_PAGE_RESET, -1, NULL);
	assert_int_equal(mb_page_level(mb_region_state(r, 4)), 2);
	mb_region_update(&map, r, 4, 1, MB_PAGE_COMMITTED | MB_PAGE_RESET,
			 MB_PAGE_COMMITTED | MB_PAGE_RESET, MB_PAGE_COMMITTED, MB_PAGE_DISCARDED,
			 -1, &lost);
	assert_int_equal(lost, 1);
	assert_int_equal(map.committed_at[2], 3);
	assert_int_equal(mb_page_level(mb_region_state(r, 4)), 2);
	assert_int_equal(mb_region_commit_at(&map, r, 4, 1, 3, 0), 1);
	assert_int_equal(mb_region_state(r, 4), MB_PAGE_COMMITTED | MB_PAGE_LEVEL(0));
	assert_int_equal(map.committed_at[0], 3);
	/* Decommit clears it; a removed region takes its counts along. */
	assert_int_equal(mb_region_decommit(&map, r, 0, 2), 2);
	assert_int_equal(mb_region_state(r, 0), 0);
	assert_int_equal(map.committed_at[1], 2);
	mb_regmap_remove(&map, r);
	assert_int_equal(map.committed_at[0], 2);
	assert_int_equal(map.committed_at[1], 0);
	assert_int_equal(map.committed_at[2], 0);
	assert_int_equal(map.committed_pages, 2);
	mb_regmap_clear(&map, NULL, NULL);
	assert_int_equal(map.committed_at[0], 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty),	   cmocka_unit_test(test_null_args),
	    cmocka_unit_test(test_insert_fields),  cmocka_unit_test(test_insert_invalid),
	    cmocka_unit_test(test_insert_overlap), cmocka_unit_test(test_find),
	    cmocka_unit_test(test_span_overlaps),  cmocka_unit_test(test_commit_decommit),
	    cmocka_unit_test(test_untracked_prot), cmocka_unit_test(test_clear),
	    cmocka_unit_test(test_many),	   cmocka_unit_test(test_huge_sparse_region),
	    cmocka_unit_test(test_levels),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
