/*
 * unit_win32.c: the Win32 virtual-memory rules (common/mb_win32.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "mb_win32.h"

#define PG    MB_PAGE_SIZE
#define GR    MB_GRANULARITY
#define LIMIT MB_ADDRESS_LIMIT

/* The base values VirtualAlloc accepts (the two copy-on-write ones are refused). */
static const DWORD valid_bases[] = {PAGE_NOACCESS, PAGE_READONLY,     PAGE_READWRITE,
				    PAGE_EXECUTE,  PAGE_EXECUTE_READ, PAGE_EXECUTE_READWRITE};

static uint8_t code_of(DWORD protect)
{
	uint8_t c = 0xff;

	assert_int_equal(mb_win32_check_protect(protect, &c), S_OK);
	return c;
}

/* ---- protection ---- */

static void test_check_protect_valid(void **state)
{
	static const DWORD mods[] = {0, PAGE_NOCACHE, PAGE_WRITECOMBINE};
	uint8_t seen[256] = {0};
	size_t b, m;

	(void)state;
	for (b = 0; b < sizeof(valid_bases) / sizeof(valid_bases[0]); b++) {
		for (m = 0; m < 3; m++) {
			DWORD p = valid_bases[b] | mods[m];
			uint8_t c;

			if (valid_bases[b] == PAGE_NOACCESS && mods[m])
				continue;
			c = code_of(p);
			/* Round trip, and every value has its own code. */
			assert_int_equal(mb_win32_protect_of(c), p);
			assert_int_equal(seen[c], 0);
			seen[c] = 1;
		}
	}
}

static void test_check_protect_invalid(void **state)
{
	static const DWORD bad[] = {
	    0,
	    PAGE_WRITECOPY,
	    PAGE_EXECUTE_WRITECOPY,
	    PAGE_READWRITE | PAGE_GUARD,
	    PAGE_NOACCESS | PAGE_GUARD,
	    PAGE_GUARD,
	    PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE,
	    PAGE_NOACCESS | PAGE_NOCACHE,
	    PAGE_NOACCESS | PAGE_WRITECOMBINE,
	    PAGE_NOCACHE,
	    PAGE_WRITECOMBINE,
	    PAGE_READONLY | PAGE_READWRITE,
	    PAGE_EXECUTE | PAGE_EXECUTE_READ,
	    PAGE_NOACCESS | PAGE_READONLY,
	    0xff,
	    PAGE_EXECUTE_READ | PAGE_TARGETS_INVALID,
	    PAGE_READWRITE | 0x800,
	    PAGE_READWRITE | 0x80000000u,
	    PAGE_READWRITE | 0x1000,
	    0xffffffffu,
	    PAGE_WRITECOPY | PAGE_NOCACHE,
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t c = 0xaa;

		assert_int_equal(mb_win32_check_protect(bad[i], &c), E_INVALIDARG);
		assert_int_equal(c, 0xaa); /* untouched on failure */
	}
	assert_int_equal(mb_win32_check_protect(PAGE_READWRITE, NULL), E_POINTER);
	assert_int_equal(mb_win32_check_protect(PAGE_GUARD, NULL), E_POINTER);
}

static void test_prot_flags(void **state)
{
	(void)state;
	assert_int_equal(mb_win32_prot_flags(code_of(PAGE_NOACCESS)), PROT_NONE);
	assert_int_equal(mb_win32_prot_flags(code_of(PAGE_READONLY)), PROT_READ);
	assert_int_equal(mb_win32_prot_flags(code_of(PAGE_READWRITE)), PROT_READ | PROT_WRITE);
	assert_int_equal(mb_win32_prot_flags(code_of(PAGE_EXECUTE)), PROT_READ | PROT_EXEC);
	assert_int_equal(mb_win32_prot_flags(code_of(PAGE_EXECUTE_READ)), PROT_READ | PROT_EXEC);
	assert_int_equal(mb_win32_prot_flags(code_of(PAGE_EXECUTE_READWRITE)),
			 PROT_READ | PROT_WRITE | PROT_EXEC);
	/* The modifiers do not change the mapping. */
	assert_int_equal(mb_win32_prot_flags(code_of(PAGE_READWRITE | PAGE_NOCACHE)),
			 PROT_READ | PROT_WRITE);
	assert_int_equal(mb_win32_prot_flags(code_of(PAGE_READONLY | PAGE_WRITECOMBINE)),
			 PROT_READ);
	assert_int_equal(mb_win32_prot_flags(code_of(PAGE_EXECUTE_READ | PAGE_NOCACHE)),
			 PROT_READ | PROT_EXEC);
}

static void test_check_level(void **state)
{
	(void)state;
	assert_int_equal(mb_win32_check_level(eTaskCritical), S_OK);
	assert_int_equal(mb_win32_check_level(eAppDomainCritical), S_OK);
	assert_int_equal(mb_win32_check_level(eProcessCritical), S_OK);
	assert_int_equal(mb_win32_check_level(-1), E_INVALIDARG);
	assert_int_equal(mb_win32_check_level(3), E_INVALIDARG);
	assert_int_equal(mb_win32_check_level(INT_MIN), E_INVALIDARG);
	assert_int_equal(mb_win32_check_level(INT_MAX), E_INVALIDARG);
}

/* ---- VirtualAlloc arguments ---- */

static HRESULT alloc(uintptr_t addr, size_t size, DWORD type, DWORD prot, int level,
		     mb_alloc_op *op)
{
	uint8_t c = 0xaa;
	mb_alloc_op o = (mb_alloc_op)-1;
	HRESULT hr = mb_win32_check_alloc(addr, size, type, prot, level, &o, &c);

	if (hr == S_OK) {
		assert_int_equal(c, code_of(prot));
	} else {
		assert_int_equal(c, 0xaa);
		assert_int_equal(o, (mb_alloc_op)-1);
	}
	if (op)
		*op = o;
	return hr;
}

static void test_check_alloc_ops(void **state)
{
	mb_alloc_op op;

	(void)state;
	assert_int_equal(alloc(0, 1, MEM_RESERVE, PAGE_READWRITE, 0, &op), S_OK);
	assert_int_equal(op, MB_ALLOC_RESERVE);
	assert_int_equal(alloc(0x10000, 1, MEM_RESERVE, PAGE_NOACCESS, 0, &op), S_OK);
	assert_int_equal(op, MB_ALLOC_RESERVE);
	assert_int_equal(alloc(0x10000, 1, MEM_COMMIT, PAGE_READWRITE, 1, &op), S_OK);
	assert_int_equal(op, MB_ALLOC_COMMIT);
	assert_int_equal(alloc(0, 1, MEM_COMMIT, PAGE_READWRITE, 2, &op), S_OK);
	assert_int_equal(op, MB_ALLOC_RESERVE_COMMIT);
	assert_int_equal(alloc(0, 1, MEM_COMMIT | MEM_RESERVE, PAGE_EXECUTE_READWRITE, 0, &op),
			 S_OK);
	assert_int_equal(op, MB_ALLOC_RESERVE_COMMIT);
	assert_int_equal(alloc(0x20000, 1, MEM_COMMIT | MEM_RESERVE, PAGE_READONLY, 0, &op), S_OK);
	assert_int_equal(op, MB_ALLOC_RESERVE_COMMIT);
	assert_int_equal(alloc(0x20000, 5, MEM_RESET, PAGE_NOACCESS, 0, &op), S_OK);
	assert_int_equal(op, MB_ALLOC_RESET);
	assert_int_equal(alloc(0x20000, 5, MEM_RESET_UNDO, PAGE_READWRITE, 0, &op), S_OK);
	assert_int_equal(op, MB_ALLOC_RESET_UNDO);
	/* MEM_TOP_DOWN is a hint. */
	assert_int_equal(alloc(0, 1, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE, 0, &op), S_OK);
	assert_int_equal(op, MB_ALLOC_RESERVE);
	assert_int_equal(alloc(0, 1, MEM_COMMIT | MEM_RESERVE | MEM_TOP_DOWN, 4, 0, &op), S_OK);
	assert_int_equal(op, MB_ALLOC_RESERVE_COMMIT);
	assert_int_equal(alloc(0x30000, 1, MEM_COMMIT | MEM_TOP_DOWN, 4, 0, &op), S_OK);
	assert_int_equal(op, MB_ALLOC_COMMIT);
	assert_int_equal(alloc(0, 1, MEM_COMMIT | MEM_TOP_DOWN, 4, 0, &op), S_OK);
	assert_int_equal(op, MB_ALLOC_RESERVE_COMMIT);
	/* Modifiers pass through; huge sizes are for plan_reserve to judge. */
	assert_int_equal(alloc(0, SIZE_MAX, MEM_RESERVE, PAGE_READWRITE | PAGE_NOCACHE, 0, &op),
			 S_OK);
	assert_int_equal(alloc(UINTPTR_MAX, SIZE_MAX, MEM_COMMIT, PAGE_READWRITE, 0, &op), S_OK);
	assert_int_equal(op, MB_ALLOC_COMMIT);
}

static void test_check_alloc_invalid(void **state)
{
	uint8_t c;
	mb_alloc_op op;

	(void)state;
	/* Refused flags. */
	assert_int_equal(alloc(0, PG, MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES, 4, 0, NULL),
			 E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_RESERVE | MEM_PHYSICAL, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_RESERVE | MEM_WRITE_WATCH, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_RESERVE | MEM_DECOMMIT, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_RESERVE | MEM_RELEASE, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_RESERVE | 0x1, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_RESERVE | 0x80000000u, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0, PG, 0xffffffffu, 4, 0, NULL), E_INVALIDARG);
	/* No operation at all. */
	assert_int_equal(alloc(0, PG, 0, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_TOP_DOWN, 4, 0, NULL), E_INVALIDARG);
	/* MEM_RESET / MEM_RESET_UNDO stand alone and need an address. */
	assert_int_equal(alloc(0x10000, PG, MEM_RESET | MEM_COMMIT, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0x10000, PG, MEM_RESET | MEM_RESERVE, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0x10000, PG, MEM_RESET | MEM_TOP_DOWN, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0x10000, PG, MEM_RESET | MEM_RESET_UNDO, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0x10000, PG, MEM_RESET_UNDO | MEM_COMMIT, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0x10000, PG, MEM_RESET_UNDO | MEM_TOP_DOWN, 4, 0, NULL),
			 E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_RESET, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_RESET_UNDO, 4, 0, NULL), E_INVALIDARG);
	/* The protection is checked even for MEM_RESET, where it is otherwise ignored. */
	assert_int_equal(alloc(0x10000, PG, MEM_RESET, 0, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0x10000, PG, MEM_RESET, PAGE_GUARD | 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0x10000, PG, MEM_RESET_UNDO, PAGE_WRITECOPY, 0, NULL), E_INVALIDARG);
	/* Bad protections. */
	assert_int_equal(alloc(0, PG, MEM_RESERVE, PAGE_WRITECOPY, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_RESERVE, PAGE_EXECUTE_WRITECOPY, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD, 0, NULL),
			 E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_COMMIT, 0, 0, NULL), E_INVALIDARG);
	/* Size 0. */
	assert_int_equal(alloc(0, 0, MEM_RESERVE, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0x10000, 0, MEM_COMMIT, 4, 0, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0x10000, 0, MEM_RESET, 4, 0, NULL), E_INVALIDARG);
	/* Level. */
	assert_int_equal(alloc(0, PG, MEM_RESERVE, 4, 3, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_RESERVE, 4, -1, NULL), E_INVALIDARG);
	assert_int_equal(alloc(0, PG, MEM_RESERVE, 4, INT_MAX, NULL), E_INVALIDARG);
	/* NULL out-pointers. */
	assert_int_equal(mb_win32_check_alloc(0, PG, MEM_RESERVE, 4, 0, NULL, &c), E_POINTER);
	assert_int_equal(mb_win32_check_alloc(0, PG, MEM_RESERVE, 4, 0, &op, NULL), E_POINTER);
	assert_int_equal(mb_win32_check_alloc(0, 0, 0, 0, 9, NULL, NULL), E_POINTER);
}

/* ---- reservation planning ---- */

static HRESULT reserve(uintptr_t addr, size_t size, uintptr_t *b, size_t *s)
{
	*b = 0xdead;
	*s = 0xbeef;
	return mb_win32_plan_reserve(addr, size, b, s);
}

static void test_plan_reserve(void **state)
{
	uintptr_t b;
	size_t s;

	(void)state;
	/* NULL address: the caller picks a base; the size rounds up to pages. */
	assert_int_equal(reserve(0, 1, &b, &s), S_OK);
	assert_int_equal(b, 0);
	assert_int_equal(s, PG);
	assert_int_equal(reserve(0, PG, &b, &s), S_OK);
	assert_int_equal(s, PG);
	assert_int_equal(reserve(0, PG + 1, &b, &s), S_OK);
	assert_int_equal(s, 2 * PG);
	assert_int_equal(reserve(0, 3 * GR + 5, &b, &s), S_OK);
	assert_int_equal(s, 3 * GR + PG);
	assert_int_equal(reserve(0, LIMIT - GR, &b, &s), S_OK);
	assert_int_equal(s, LIMIT - GR);

	/* Explicit address: rounded down to 64 KiB; size covers every touched page. */
	assert_int_equal(reserve(0x10000, 1, &b, &s), S_OK);
	assert_int_equal(b, 0x10000);
	assert_int_equal(s, PG);
	assert_int_equal(reserve(0x12345, 0x10, &b, &s), S_OK);
	assert_int_equal(b, 0x10000);
	assert_int_equal(s, 0x3000);
	assert_int_equal(reserve(0x12fff, 2, &b, &s), S_OK); /* straddles a page boundary */
	assert_int_equal(b, 0x10000);
	assert_int_equal(s, 0x4000);
	assert_int_equal(reserve(0x1ffff, 1, &b, &s), S_OK);
	assert_int_equal(b, 0x10000);
	assert_int_equal(s, GR);
	assert_int_equal(reserve(0x7fff0000, GR, &b, &s), S_OK);
	assert_int_equal(b, 0x7fff0000);
	assert_int_equal(s, GR);
	/* Up to the limit, exactly. */
	assert_int_equal(reserve(LIMIT - GR, GR, &b, &s), S_OK);
	assert_int_equal(b, LIMIT - GR);
	assert_int_equal(s, GR);
	assert_int_equal(reserve(LIMIT - 1, 1, &b, &s), S_OK);
	assert_int_equal(b, LIMIT - GR);
	assert_int_equal(s, GR);
	assert_int_equal(reserve(GR, LIMIT - GR, &b, &s), S_OK);
	assert_int_equal(b, GR);
	assert_int_equal(s, LIMIT - GR);
}

static void test_plan_reserve_invalid(void **state)
{
	uintptr_t b;
	size_t s;

	(void)state;
	assert_int_equal(reserve(0, 0, &b, &s), E_INVALIDARG);
	assert_int_equal(reserve(0x10000, 0, &b, &s), E_INVALIDARG);
	/* Below MB_ADDRESS_MIN. */
	assert_int_equal(reserve(1, 1, &b, &s), E_INVALIDARG);
	assert_int_equal(reserve(0xffff, 1, &b, &s), E_INVALIDARG);
	/* At or past the limit. */
	assert_int_equal(reserve(LIMIT, 1, &b, &s), E_INVALIDARG);
	assert_int_equal(reserve(LIMIT - 1, 2, &b, &s), E_INVALIDARG);
	assert_int_equal(reserve(LIMIT - GR, GR + 1, &b, &s), E_INVALIDARG);
	assert_int_equal(reserve(GR, LIMIT - GR + 1, &b, &s), E_INVALIDARG);
	/* Absurd sizes. */
	assert_int_equal(reserve(0, LIMIT, &b, &s), E_INVALIDARG);
	assert_int_equal(reserve(0, LIMIT - GR + 1, &b, &s), E_INVALIDARG);
	assert_int_equal(reserve(0, SIZE_MAX, &b, &s), E_INVALIDARG);
	assert_int_equal(reserve(0, SIZE_MAX - PG + 2, &b, &s), E_INVALIDARG);
	assert_int_equal(reserve(0x10000, SIZE_MAX, &b, &s), E_INVALIDARG);
	assert_int_equal(reserve(0x10000, LIMIT, &b, &s), E_INVALIDARG);
	/* Wrapping. */
	assert_int_equal(reserve(UINTPTR_MAX, 1, &b, &s), E_INVALIDARG);
	assert_int_equal(reserve(UINTPTR_MAX - PG, 2 * PG, &b, &s), E_INVALIDARG);
	assert_int_equal(reserve(UINTPTR_MAX & ~(uintptr_t)(GR - 1), GR, &b, &s), E_INVALIDARG);
	/* Outputs untouched on failure. */
	assert_int_equal(b, 0xdead);
	assert_int_equal(s, 0xbeef);
	/* NULL out-pointers. */
	assert_int_equal(mb_win32_plan_reserve(0, PG, NULL, &s), E_POINTER);
	assert_int_equal(mb_win32_plan_reserve(0, PG, &b, NULL), E_POINTER);
}

/* ---- a map to plan against ---- */

/*
 * A: 0x100000, 10 pages (span 64 KiB, tail 0x10a000..0x10ffff)
 * B: 0x110000, 4 pages, directly after A's span
 * C: 0x400000, 20 pages (span 128 KiB)
 */
#define A_BASE 0x100000u
#define B_BASE 0x110000u
#define C_BASE 0x400000u

struct fixture {
	mb_regmap map;
	mb_region *a, *b, *c;
};

static int setup_map(void **state, bool track)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	mb_regmap_init(&f->map, track);
	assert_int_equal(mb_regmap_insert(&f->map, A_BASE, 10 * PG, PAGE_READWRITE, &f->a), 0);
	assert_int_equal(mb_regmap_insert(&f->map, B_BASE, 4 * PG, PAGE_EXECUTE_READ, &f->b), 0);
	assert_int_equal(mb_regmap_insert(&f->map, C_BASE, 20 * PG, PAGE_NOACCESS, &f->c), 0);
	*state = f;
	return 0;
}

static int setup_tracked(void **state)
{
	return setup_map(state, true);
}

static int setup_untracked(void **state)
{
	return setup_map(state, false);
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	mb_regmap_clear(&f->map, NULL, NULL);
	free(f);
	return 0;
}

static void expect_range(const mb_page_range *r, const mb_region *reg, uintptr_t start,
			 size_t first, size_t count)
{
	assert_ptr_equal(r->region, reg);
	assert_int_equal(r->start, start);
	assert_int_equal(r->first, first);
	assert_int_equal(r->count, count);
}

static void test_plan_range(void **state)
{
	struct fixture *f = *state;
	mb_page_range r;

	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE, 1, &r), S_OK);
	expect_range(&r, f->a, A_BASE, 0, 1);
	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE, 10 * PG, &r), S_OK);
	expect_range(&r, f->a, A_BASE, 0, 10);
	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE + 0x1fff, 2, &r), S_OK);
	expect_range(&r, f->a, A_BASE + 0x1000, 1, 2);
	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE + 0x1800, PG, &r), S_OK);
	expect_range(&r, f->a, A_BASE + 0x1000, 1, 2);
	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE + 9 * PG + 5, PG - 5, &r), S_OK);
	expect_range(&r, f->a, A_BASE + 9 * PG, 9, 1);
	assert_int_equal(mb_win32_plan_range(&f->map, C_BASE + 3 * PG + 1, 17 * PG - 1, &r), S_OK);
	expect_range(&r, f->c, C_BASE + 3 * PG, 3, 17);

	memset(&r, 0x5a, sizeof(r));
	/* Crossing the region's end, into its tail or the next region. */
	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE, 10 * PG + 1, &r),
			 MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE + 9 * PG, 0x7000, &r),
			 MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE, GR + 1, &r), MB_E_INVALID_ADDRESS);
	/* Outside every region. */
	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE - 1, 2, &r), MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE + 10 * PG, 1, &r),
			 MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_range(&f->map, 0, 1, &r), MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_range(&f->map, 0x200000, PG, &r), MB_E_INVALID_ADDRESS);
	/* Overflowing. */
	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE, SIZE_MAX, &r), MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_range(&f->map, UINTPTR_MAX, 1, &r), MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_range(&f->map, UINTPTR_MAX, 2, &r), MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_range(&f->map, C_BASE, SIZE_MAX - C_BASE + 1, &r),
			 MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_range(&f->map, C_BASE, SIZE_MAX - C_BASE + 2, &r),
			 MB_E_INVALID_ADDRESS);
	/* Bad arguments. */
	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE, 0, &r), E_INVALIDARG);
	assert_int_equal(mb_win32_plan_range(NULL, A_BASE, 1, &r), E_INVALIDARG);
	assert_int_equal(mb_win32_plan_range(&f->map, A_BASE, 1, NULL), E_POINTER);
	assert_int_equal(r.count, (size_t)0x5a5a5a5a5a5a5a5aull);
}

static void test_plan_free(void **state)
{
	struct fixture *f = *state;
	mb_page_range r;

	/* MEM_RELEASE: the base with size 0 covers the whole region. */
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE, 0, MEM_RELEASE, &r), S_OK);
	expect_range(&r, f->a, A_BASE, 0, 10);
	assert_int_equal(mb_win32_plan_free(&f->map, C_BASE, 0, MEM_RELEASE, &r), S_OK);
	expect_range(&r, f->c, C_BASE, 0, 20);
	/* MEM_DECOMMIT: size 0 at the base is the whole region; otherwise touched pages. */
	assert_int_equal(mb_win32_plan_free(&f->map, B_BASE, 0, MEM_DECOMMIT, &r), S_OK);
	expect_range(&r, f->b, B_BASE, 0, 4);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE + 0x1fff, 2, MEM_DECOMMIT, &r), S_OK);
	expect_range(&r, f->a, A_BASE + PG, 1, 2);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE, 10 * PG, MEM_DECOMMIT, &r), S_OK);
	expect_range(&r, f->a, A_BASE, 0, 10);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE + 10 * PG - 1, 1, MEM_DECOMMIT, &r),
			 S_OK);
	expect_range(&r, f->a, A_BASE + 9 * PG, 9, 1);

	memset(&r, 0x5a, sizeof(r));
	/* free_type. */
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE, 0, 0, &r), E_INVALIDARG);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE, 0, MEM_DECOMMIT | MEM_RELEASE, &r),
			 E_INVALIDARG);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE, 0, MEM_RELEASE | 1, &r), E_INVALIDARG);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE, 0, MEM_COALESCE_PLACEHOLDERS, &r),
			 E_INVALIDARG);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE, 0, MEM_RESERVE, &r), E_INVALIDARG);
	assert_int_equal(mb_win32_plan_free(&f->map, 0x900000, 0, 0, &r), E_INVALIDARG);
	/* MEM_RELEASE with a size is an argument error, wherever it points. */
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE, PG, MEM_RELEASE, &r), E_INVALIDARG);
	assert_int_equal(mb_win32_plan_free(&f->map, 0x900000, PG, MEM_RELEASE, &r), E_INVALIDARG);
	/* Not our memory. */
	assert_int_equal(mb_win32_plan_free(&f->map, 0x900000, 0, MEM_RELEASE, &r),
			 HOST_E_INVALIDOPERATION);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE + 10 * PG, 0, MEM_RELEASE, &r),
			 HOST_E_INVALIDOPERATION); /* the span's tail is not allocated memory */
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE - 1, 2, MEM_DECOMMIT, &r),
			 HOST_E_INVALIDOPERATION);
	assert_int_equal(mb_win32_plan_free(&f->map, 0, 0, MEM_DECOMMIT, &r),
			 HOST_E_INVALIDOPERATION);
	assert_int_equal(mb_win32_plan_free(&f->map, UINTPTR_MAX, 1, MEM_DECOMMIT, &r),
			 HOST_E_INVALIDOPERATION);
	/* Inside a region but not at its base. */
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE + 1, 0, MEM_RELEASE, &r),
			 MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE + PG, 0, MEM_RELEASE, &r),
			 MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE + PG, 0, MEM_DECOMMIT, &r),
			 MB_E_INVALID_ADDRESS);
	/* Decommit past the end of the reservation, over free pages or into the next reservation,
	 * or overflowing: NT's STATUS_UNABLE_TO_FREE_VM, ERROR_INVALID_PARAMETER in Win32
	 * (ReactOS's NtFreeVirtualMemory test: one byte more than the reservation, and a page
	 * from base+1). */
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE, 10 * PG + 1, MEM_DECOMMIT, &r),
			 E_INVALIDARG);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE + 1, 10 * PG, MEM_DECOMMIT, &r),
			 E_INVALIDARG);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE + PG, GR, MEM_DECOMMIT, &r),
			 E_INVALIDARG);
	assert_int_equal(
	    mb_win32_plan_free(&f->map, A_BASE, B_BASE - A_BASE + PG, MEM_DECOMMIT, &r),
	    E_INVALIDARG); /* allocated, free, then the next reservation's pages */
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE, SIZE_MAX, MEM_DECOMMIT, &r),
			 E_INVALIDARG);
	assert_int_equal(
	    mb_win32_plan_free(&f->map, C_BASE + 1, SIZE_MAX - C_BASE, MEM_DECOMMIT, &r),
	    E_INVALIDARG);
	/* ... but a range starting one byte in and ending inside is the pages it touches. */
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE + 1, PG - 1, MEM_DECOMMIT, &r), S_OK);
	expect_range(&r, f->a, A_BASE, 0, 1);
	memset(&r, 0x5a, sizeof(r));
	/* Arguments. */
	assert_int_equal(mb_win32_plan_free(NULL, A_BASE, 0, MEM_RELEASE, &r), E_INVALIDARG);
	assert_int_equal(mb_win32_plan_free(&f->map, A_BASE, 0, MEM_RELEASE, NULL), E_POINTER);
	assert_int_equal(r.count, (size_t)0x5a5a5a5a5a5a5a5aull);
}

/* MEM_RESET / MEM_RESET_UNDO: any state inside one reservation; reserved pages are no error (Wine's
 * test_VirtualAlloc: MEM_RESET of a reserved page returns its address and it stays MEM_RESERVE;
 * one running past the reservation's end fails with ERROR_INVALID_ADDRESS). */
static void test_plan_reset(void **state)
{
	struct fixture *f = *state;
	mb_page_range r;
	size_t committed = 99;

	assert_int_equal(mb_win32_plan_reset(&f->map, A_BASE + PG, PG, &r, &committed), S_OK);
	expect_range(&r, f->a, A_BASE + PG, 1, 1);
	assert_int_equal(committed, 0);
	assert_int_equal(mb_region_commit(&f->map, f->a, 2, 3, 2), 3);
	assert_int_equal(mb_win32_plan_reset(&f->map, A_BASE + 1, 10 * PG - 1, &r, &committed),
			 S_OK);
	expect_range(&r, f->a, A_BASE, 0, 10);
	assert_int_equal(committed, 3);
	assert_int_equal(mb_win32_plan_reset(&f->map, A_BASE + 3 * PG, PG, &r, &committed), S_OK);
	assert_int_equal(committed, 1);

	memset(&r, 0x5a, sizeof(r));
	committed = 99;
	assert_int_equal(mb_win32_plan_reset(&f->map, A_BASE + 9 * PG, 2 * PG, &r, &committed),
			 MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_reset(&f->map, 0x900000, PG, &r, &committed),
			 MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_reset(&f->map, A_BASE, 0, &r, &committed), E_INVALIDARG);
	assert_int_equal(mb_win32_plan_reset(&f->map, A_BASE, PG, NULL, &committed), E_POINTER);
	assert_int_equal(mb_win32_plan_reset(&f->map, A_BASE, PG, &r, NULL), E_POINTER);
	assert_int_equal(r.count, (size_t)0x5a5a5a5a5a5a5a5aull);
	assert_int_equal(committed, 99);
}

static void query(const mb_regmap *map, uintptr_t addr, MEMORY_BASIC_INFORMATION *mbi)
{
	memset(mbi, 0x5a, sizeof(*mbi));
	assert_int_equal(mb_win32_query(map, addr, mbi), S_OK);
}

static void expect_free(const MEMORY_BASIC_INFORMATION *m, uintptr_t base, size_t size)
{
	assert_ptr_equal(m->BaseAddress, (void *)base);
	assert_null(m->AllocationBase);
	assert_int_equal(m->AllocationProtect, 0);
	assert_int_equal(m->RegionSize, size);
	assert_int_equal(m->State, MEM_FREE);
	assert_int_equal(m->Protect, PAGE_NOACCESS);
	assert_int_equal(m->Type, 0);
}

static void expect_run(const MEMORY_BASIC_INFORMATION *m, const mb_region *reg, uintptr_t base,
		       size_t size, DWORD state, DWORD protect)
{
	assert_ptr_equal(m->BaseAddress, (void *)base);
	assert_ptr_equal(m->AllocationBase, (void *)reg->base);
	assert_int_equal(m->AllocationProtect, reg->alloc_protect);
	assert_int_equal(m->RegionSize, size);
	assert_int_equal(m->State, state);
	assert_int_equal(m->Protect, protect);
	assert_int_equal(m->Type, MEM_PRIVATE);
}

static void test_query_free(void **state)
{
	struct fixture *f = *state;
	MEMORY_BASIC_INFORMATION m;

	query(&f->map, 0, &m);
	expect_free(&m, 0, A_BASE);
	query(&f->map, 0x12345, &m);
	expect_free(&m, 0x12000, A_BASE - 0x12000);
	query(&f->map, A_BASE - 1, &m);
	expect_free(&m, A_BASE - PG, PG);
	/* A's span tail is free, up to B. */
	query(&f->map, A_BASE + 10 * PG, &m);
	expect_free(&m, A_BASE + 10 * PG, B_BASE - (A_BASE + 10 * PG));
	query(&f->map, B_BASE - 1, &m);
	expect_free(&m, B_BASE - PG, PG);
	/* After B (and its tail) up to C. */
	query(&f->map, B_BASE + 4 * PG, &m);
	expect_free(&m, B_BASE + 4 * PG, C_BASE - (B_BASE + 4 * PG));
	/* After the last region: up to the limit. */
	query(&f->map, C_BASE + 20 * PG, &m);
	expect_free(&m, C_BASE + 20 * PG, LIMIT - (C_BASE + 20 * PG));
	query(&f->map, LIMIT - 1, &m);
	expect_free(&m, LIMIT - PG, PG);

	/* Out of range and bad arguments. */
	memset(&m, 0x5a, sizeof(m));
	assert_int_equal(mb_win32_query(&f->map, LIMIT, &m), E_INVALIDARG);
	assert_int_equal(mb_win32_query(&f->map, UINTPTR_MAX, &m), E_INVALIDARG);
	assert_int_equal(mb_win32_query(NULL, 0, &m), E_INVALIDARG);
	assert_int_equal(m.State, 0x5a5a5a5a);
	assert_int_equal(mb_win32_query(&f->map, 0, NULL), E_POINTER);

	/* An empty map is free everywhere. */
	{
		mb_regmap empty;

		mb_regmap_init(&empty, true);
		query(&empty, 0x123456789, &m);
		expect_free(&m, 0x123456000, LIMIT - 0x123456000);
	}
}

static void test_query_runs(void **state)
{
	struct fixture *f = *state;
	MEMORY_BASIC_INFORMATION m;
	size_t i;

	/*
	 * A: pages 0-1 reserved, 2-3 READWRITE, 4-5 READONLY, 6 reserved, 7 EXECUTE_READ,
	 * 8-9 reserved. B: all reserved.
	 */
	assert_int_equal(mb_region_commit(&f->map, f->a, 2, 4, code_of(PAGE_READWRITE)), 4);
	mb_region_set_prot(f->a, 4, 2, code_of(PAGE_READONLY));
	assert_int_equal(mb_region_commit(&f->map, f->a, 7, 1, code_of(PAGE_EXECUTE_READ)), 1);

	query(&f->map, A_BASE, &m);
	expect_run(&m, f->a, A_BASE, 2 * PG, MEM_RESERVE, 0);
	query(&f->map, A_BASE + PG + 7, &m);
	expect_run(&m, f->a, A_BASE + PG, PG, MEM_RESERVE, 0);
	query(&f->map, A_BASE + 2 * PG, &m);
	expect_run(&m, f->a, A_BASE + 2 * PG, 2 * PG, MEM_COMMIT, PAGE_READWRITE);
	query(&f->map, A_BASE + 4 * PG - 1, &m);
	expect_run(&m, f->a, A_BASE + 3 * PG, PG, MEM_COMMIT, PAGE_READWRITE);
	query(&f->map, A_BASE + 4 * PG, &m);
	expect_run(&m, f->a, A_BASE + 4 * PG, 2 * PG, MEM_COMMIT, PAGE_READONLY);
	query(&f->map, A_BASE + 6 * PG, &m);
	expect_run(&m, f->a, A_BASE + 6 * PG, PG, MEM_RESERVE, 0);
	query(&f->map, A_BASE + 7 * PG, &m);
	expect_run(&m, f->a, A_BASE + 7 * PG, PG, MEM_COMMIT, PAGE_EXECUTE_READ);
	/* The last run stops at A's end although B's first pages are reserved too. */
	query(&f->map, A_BASE + 8 * PG, &m);
	expect_run(&m, f->a, A_BASE + 8 * PG, 2 * PG, MEM_RESERVE, 0);
	query(&f->map, B_BASE, &m);
	expect_run(&m, f->b, B_BASE, 4 * PG, MEM_RESERVE, 0);

	/* Modifiers are reported as given. */
	mb_region_set_prot(f->a, 3, 1, code_of(PAGE_READWRITE | PAGE_NOCACHE));
	query(&f->map, A_BASE + 2 * PG, &m);
	expect_run(&m, f->a, A_BASE + 2 * PG, PG, MEM_COMMIT, PAGE_READWRITE);
	query(&f->map, A_BASE + 3 * PG, &m);
	expect_run(&m, f->a, A_BASE + 3 * PG, PG, MEM_COMMIT, PAGE_READWRITE | PAGE_NOCACHE);

	/* Reset pages are still committed and do not split a run. */
	mb_region_update(&f->map, f->a, 4, 1, 0, 0, 0, MB_PAGE_RESET, -1, NULL);
	query(&f->map, A_BASE + 4 * PG, &m);
	expect_run(&m, f->a, A_BASE + 4 * PG, 2 * PG, MEM_COMMIT, PAGE_READONLY);

	/* A fully committed region with one protection is one run, ending at its end. */
	assert_int_equal(mb_region_commit(&f->map, f->b, 0, 4, code_of(PAGE_EXECUTE)), 4);
	query(&f->map, B_BASE + PG, &m);
	expect_run(&m, f->b, B_BASE + PG, 3 * PG, MEM_COMMIT, PAGE_EXECUTE);

	/* Decommitting splits runs again; the walk from A's base covers A exactly. */
	assert_int_equal(mb_region_decommit(&f->map, f->a, 7, 1), 1);
	query(&f->map, A_BASE + 6 * PG, &m);
	expect_run(&m, f->a, A_BASE + 6 * PG, 4 * PG, MEM_RESERVE, 0);
	{
		uintptr_t at = A_BASE;

		for (i = 0; at < A_BASE + 10 * PG; i++) {
			query(&f->map, at, &m);
			assert_ptr_equal(m.AllocationBase, (void *)A_BASE);
			at += m.RegionSize;
		}
		assert_int_equal(at, A_BASE + 10 * PG);
		assert_int_equal(i, 5); /* R R | RW | RW+NC | RO RO | R R R R */
	}
}

static void test_query_untracked(void **state)
{
	struct fixture *f = *state;
	MEMORY_BASIC_INFORMATION m;

	/* Without protections, committed pages form one run reporting the reservation's value. */
	assert_int_equal(mb_region_commit(&f->map, f->a, 1, 2, code_of(PAGE_READONLY)), 2);
	assert_int_equal(mb_region_commit(&f->map, f->a, 3, 3, code_of(PAGE_EXECUTE)), 3);
	query(&f->map, A_BASE, &m);
	expect_run(&m, f->a, A_BASE, PG, MEM_RESERVE, 0);
	query(&f->map, A_BASE + PG, &m);
	expect_run(&m, f->a, A_BASE + PG, 5 * PG, MEM_COMMIT, PAGE_READWRITE);
	query(&f->map, A_BASE + 6 * PG, &m);
	expect_run(&m, f->a, A_BASE + 6 * PG, 4 * PG, MEM_RESERVE, 0);
	assert_int_equal(mb_region_commit(&f->map, f->b, 0, 4, 0), 4);
	query(&f->map, B_BASE, &m);
	expect_run(&m, f->b, B_BASE, 4 * PG, MEM_COMMIT, PAGE_EXECUTE_READ);
}

static void test_plan_protect(void **state)
{
	struct fixture *f = *state;
	mb_page_range r;
	uint8_t c = 0;
	DWORD old = 0;

	assert_int_equal(mb_region_commit(&f->map, f->a, 2, 4, code_of(PAGE_READWRITE)), 4);
	mb_region_set_prot(f->a, 4, 2, code_of(PAGE_EXECUTE_READ));

	assert_int_equal(
	    mb_win32_plan_protect(&f->map, A_BASE + 2 * PG, 4 * PG, PAGE_READONLY, &r, &c, &old),
	    S_OK);
	expect_range(&r, f->a, A_BASE + 2 * PG, 2, 4);
	assert_int_equal(c, code_of(PAGE_READONLY));
	assert_int_equal(old, PAGE_READWRITE);

	/* The old protection is the first page's, with pages touched by partial bytes. */
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, A_BASE + 4 * PG + 100, 2, PAGE_NOACCESS, &r, &c, &old),
	    S_OK);
	expect_range(&r, f->a, A_BASE + 4 * PG, 4, 1);
	assert_int_equal(c, code_of(PAGE_NOACCESS));
	assert_int_equal(old, PAGE_EXECUTE_READ);
	assert_int_equal(mb_win32_plan_protect(&f->map, A_BASE + 4 * PG - 1, 2,
					       PAGE_EXECUTE_READWRITE | PAGE_WRITECOMBINE, &r, &c,
					       &old),
			 S_OK);
	expect_range(&r, f->a, A_BASE + 3 * PG, 3, 2);
	assert_int_equal(mb_win32_protect_of(c), PAGE_EXECUTE_READWRITE | PAGE_WRITECOMBINE);
	assert_int_equal(old, PAGE_READWRITE);

	r.count = 77;
	c = 0xaa;
	old = 0xbb;
	/* Any uncommitted page fails the whole call. */
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, A_BASE + PG, 2 * PG, PAGE_READONLY, &r, &c, &old),
	    MB_E_INVALID_ADDRESS);
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, A_BASE + 5 * PG, PG + 1, PAGE_READONLY, &r, &c, &old),
	    MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_win32_plan_protect(&f->map, A_BASE, 1, PAGE_READONLY, &r, &c, &old),
			 MB_E_INVALID_ADDRESS);
	/* Outside, across regions, overflowing. */
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, A_BASE + 10 * PG, 1, PAGE_READONLY, &r, &c, &old),
	    MB_E_INVALID_ADDRESS);
	assert_int_equal(mb_regmap_insert(&f->map, 0x120000, PG, PAGE_READWRITE, NULL), 0);
	assert_int_equal(mb_region_commit(&f->map, f->b, 0, 4, code_of(PAGE_READWRITE)), 4);
	assert_int_equal(mb_region_commit(&f->map, mb_regmap_find(&f->map, 0x120000), 0, 1,
					  code_of(PAGE_READWRITE)),
			 1);
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, B_BASE, 0x11000, PAGE_READONLY, &r, &c, &old),
	    MB_E_INVALID_ADDRESS);
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, A_BASE + 2 * PG, SIZE_MAX, PAGE_READONLY, &r, &c, &old),
	    MB_E_INVALID_ADDRESS);
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, UINTPTR_MAX, 1, PAGE_READONLY, &r, &c, &old),
	    MB_E_INVALID_ADDRESS);
	/* Bad protections and size. */
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, A_BASE + 2 * PG, PG, PAGE_WRITECOPY, &r, &c, &old),
	    E_INVALIDARG);
	assert_int_equal(mb_win32_plan_protect(&f->map, A_BASE + 2 * PG, PG,
					       PAGE_READWRITE | PAGE_GUARD, &r, &c, &old),
			 E_INVALIDARG);
	assert_int_equal(mb_win32_plan_protect(&f->map, A_BASE + 2 * PG, PG, 0, &r, &c, &old),
			 E_INVALIDARG);
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, A_BASE + 2 * PG, 0, PAGE_READONLY, &r, &c, &old),
	    E_INVALIDARG);
	assert_int_equal(
	    mb_win32_plan_protect(NULL, A_BASE + 2 * PG, PG, PAGE_READONLY, &r, &c, &old),
	    E_INVALIDARG);
	assert_int_equal(r.count, 77);
	assert_int_equal(c, 0xaa);
	assert_int_equal(old, 0xbb);
	/* NULL out-pointers. */
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, A_BASE + 2 * PG, PG, PAGE_READONLY, NULL, &c, &old),
	    E_POINTER);
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, A_BASE + 2 * PG, PG, PAGE_READONLY, &r, NULL, &old),
	    E_POINTER);
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, A_BASE + 2 * PG, PG, PAGE_READONLY, &r, &c, NULL),
	    E_POINTER);
}

static void test_plan_protect_untracked(void **state)
{
	struct fixture *f = *state;
	mb_page_range r;
	uint8_t c;
	DWORD old;

	assert_int_equal(mb_region_commit(&f->map, f->c, 0, 20, code_of(PAGE_READWRITE)), 20);
	assert_int_equal(
	    mb_win32_plan_protect(&f->map, C_BASE + PG, PG, PAGE_READONLY, &r, &c, &old), S_OK);
	expect_range(&r, f->c, C_BASE + PG, 1, 1);
	assert_int_equal(old, PAGE_NOACCESS); /* the reservation's value: the map knows no more */
	assert_int_equal(c, code_of(PAGE_READONLY));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_check_protect_valid),
	    cmocka_unit_test(test_check_protect_invalid),
	    cmocka_unit_test(test_prot_flags),
	    cmocka_unit_test(test_check_level),
	    cmocka_unit_test(test_check_alloc_ops),
	    cmocka_unit_test(test_check_alloc_invalid),
	    cmocka_unit_test(test_plan_reserve),
	    cmocka_unit_test(test_plan_reserve_invalid),
	    cmocka_unit_test_setup_teardown(test_plan_range, setup_tracked, teardown),
	    cmocka_unit_test_setup_teardown(test_plan_free, setup_tracked, teardown),
	    cmocka_unit_test_setup_teardown(test_plan_reset, setup_tracked, teardown),
	    cmocka_unit_test_setup_teardown(test_query_free, setup_tracked, teardown),
	    cmocka_unit_test_setup_teardown(test_query_runs, setup_tracked, teardown),
	    cmocka_unit_test_setup_teardown(test_query_untracked, setup_untracked, teardown),
	    cmocka_unit_test_setup_teardown(test_plan_protect, setup_tracked, teardown),
	    cmocka_unit_test_setup_teardown(test_plan_protect_untracked, setup_untracked, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
