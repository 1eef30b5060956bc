/*
 * test_vm_rules.c: conformance of libmembroker's VirtualAlloc / VirtualFree / VirtualQuery /
 * VirtualProtect with the Win32 rules of reference/hosting-api.md section 4, against a real broker.
 *
 * One broker for the whole file, started with --budget 64M (the budget test needs a small budget;
 * every other test stays far below it), and one client. Every test releases what it reserves, and
 * compares the broker's figures against a baseline taken at its start.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "harness.h"
#include "membroker.h"

#define PAGE  ((size_t)4096)
#define GRAN  ((size_t)65536)
#define KiB   ((size_t)1024)
#define MiB   ((size_t)1024 * 1024)
#define ANY   0xFFFFFFFFu /* field not checked */
#define BADHR MB_HR(0x12345678)

static mb_test_broker g_broker;
static mb_client *g_c;

/* ---- assertion helpers ---- */

#define assert_ptr(got, want)                                                                      \
	do {                                                                                       \
		const void *g_ = (const void *)(got);                                              \
		const void *w_ = (const void *)(want);                                             \
		if (g_ != w_) {                                                                    \
			print_error("%s:%d: %s is %p, expected %p\n", __FILE__, __LINE__, #got,    \
				    g_, w_);                                                       \
			_fail(__FILE__, __LINE__);                                                 \
		}                                                                                  \
	} while (0)

static mb_session_status status(void)
{
	mb_session_status st;
	memset(&st, 0, sizeof(st));
	assert_hr(mb_get_session_status(g_c, &st), S_OK);
	return st;
}

/* Reserves (and optionally commits) at address; asserts S_OK and returns *mem. */
static void *alloc_ok(void *address, size_t size, DWORD type, DWORD protect)
{
	void *mem = (void *)0x1;
	assert_hr(mb_virtual_alloc(g_c, address, size, type, protect, eTaskCritical, &mem), S_OK);
	assert_non_null(mem);
	return mem;
}

static void *reserve(void *address, size_t size)
{
	return alloc_ok(address, size, MEM_RESERVE, PAGE_NOACCESS);
}

static void release(void *base)
{
	assert_hr(mb_virtual_free(g_c, base, 0, MEM_RELEASE), S_OK);
}

/* Asserts that VirtualAlloc fails with want and leaves *mem NULL. */
static void alloc_fails(void *address, size_t size, DWORD type, DWORD protect, int level,
			HRESULT want, const char *file, int line)
{
	void *mem = (void *)0x1;
	HRESULT hr =
	    mb_virtual_alloc(g_c, address, size, type, protect, (EMemoryCriticalLevel)level, &mem);
	if (hr != want) {
		char expr[160];
		snprintf(expr, sizeof(expr),
			 "mb_virtual_alloc(%p, 0x%zx, type 0x%" PRIX32 ", protect 0x%" PRIX32
			 ", level %d)",
			 address, size, (uint32_t)type, (uint32_t)protect, level);
		mb_test_fail_hr(expr, hr, want, file, line);
	}
	if (mem != NULL) {
		print_error("%s:%d: failed mb_virtual_alloc left *mem = %p, expected NULL\n", file,
			    line, mem);
		_fail(file, line);
	}
}
#define ALLOC_FAILS(a, s, t, p, want)                                                              \
	alloc_fails(a, s, t, p, eTaskCritical, want, __FILE__, __LINE__)

static MEMORY_BASIC_INFORMATION query(const void *address)
{
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written = 12345;
	memset(&mbi, 0xA5, sizeof(mbi));
	assert_hr(mb_virtual_query(g_c, address, &mbi, sizeof(mbi), &written), S_OK);
	assert_u64(written, sizeof(MEMORY_BASIC_INFORMATION));
	return mbi;
}

/*
 * Checks VirtualQuery(address) field by field. ANY skips a DWORD field (Protect of reserved pages
 * and AllocationProtect / Type of free pages are undefined in Win32).
 */
static void check_query(const void *address, const void *base, const void *alloc_base,
			DWORD alloc_protect, size_t region_size, DWORD state, DWORD protect,
			const char *file, int line)
{
	MEMORY_BASIC_INFORMATION m = query(address);
	bool ok = m.BaseAddress == base && m.RegionSize == region_size && m.State == state;
	if (state != MEM_FREE) {
		ok = ok && m.AllocationBase == alloc_base && m.Type == MEM_PRIVATE;
		if (alloc_protect != ANY)
			ok = ok && m.AllocationProtect == alloc_protect;
	}
	if (protect != ANY)
		ok = ok && m.Protect == protect;
	if (!ok) {
		print_error("%s:%d: VirtualQuery(%p) =\n"
			    "    { Base %p, AllocBase %p, AllocProtect 0x%" PRIX32
			    ", RegionSize 0x%zx, State 0x%" PRIX32 ", Protect 0x%" PRIX32
			    ", Type 0x%" PRIX32 " }\n  expected\n"
			    "    { Base %p, AllocBase %p, AllocProtect 0x%" PRIX32
			    ", RegionSize 0x%zx, State 0x%" PRIX32 ", Protect 0x%" PRIX32
			    ", Type 0x%" PRIX32 " } (0xFFFFFFFF: any)\n",
			    file, line, address, m.BaseAddress, m.AllocationBase,
			    (uint32_t)m.AllocationProtect, (size_t)m.RegionSize, (uint32_t)m.State,
			    (uint32_t)m.Protect, (uint32_t)m.Type, base, alloc_base,
			    (uint32_t)alloc_protect, region_size, (uint32_t)state,
			    (uint32_t)protect, (uint32_t)(state == MEM_FREE ? ANY : MEM_PRIVATE));
		_fail(file, line);
	}
}
#define CHECK_QUERY(addr, base, abase, aprot, size, state, prot)                                   \
	check_query(addr, base, abase, aprot, size, state, prot, __FILE__, __LINE__)

/* VirtualQuery(address) describes free memory from base, at least min_size bytes long. */
static void check_free(const void *address, const void *base, size_t min_size, const char *file,
		       int line)
{
	MEMORY_BASIC_INFORMATION m = query(address);
	if (m.State != MEM_FREE || m.BaseAddress != base || m.RegionSize < min_size ||
	    m.Protect != PAGE_NOACCESS) {
		print_error(
		    "%s:%d: VirtualQuery(%p) = { Base %p, RegionSize 0x%zx, State 0x%" PRIX32
		    ", Protect 0x%" PRIX32 " }, expected { Base %p, RegionSize >= 0x%zx, "
		    "State MEM_FREE, Protect PAGE_NOACCESS }\n",
		    file, line, address, m.BaseAddress, (size_t)m.RegionSize, (uint32_t)m.State,
		    (uint32_t)m.Protect, base, min_size);
		_fail(file, line);
	}
}
#define CHECK_FREE(addr, base, min) check_free(addr, base, min, __FILE__, __LINE__)

/* A free, 64 KiB aligned stretch of this process's address space of at least size bytes. */
static uint8_t *free_area(size_t size)
{
	uint8_t *base = reserve(NULL, size);
	release(base);
	return base;
}

static bool all_bytes(const void *p, size_t n, uint8_t v)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i] != v)
			return false;
	return true;
}

/* ---- group setup ---- */

static int group_setup(void **state)
{
	static const char *const args[] = {"--budget", "64M", NULL};
	(void)state;
	if (mb_test_broker_start(&g_broker, args) != 0)
		return -1;
	HRESULT hr = mb_connect(g_broker.address, &g_c);
	if (hr != S_OK) {
		fprintf(stderr, "mb_connect(%s): 0x%08" PRIX32 " %s\n", g_broker.address,
			(uint32_t)hr, mb_last_error());
		mb_test_broker_stop(&g_broker);
		return -1;
	}
	return 0;
}

static int group_teardown(void **state)
{
	(void)state;
	mb_disconnect(g_c);
	g_c = NULL;
	mb_test_broker_stop(&g_broker);
	return 0;
}

/* ---- reserve ---- */

static void test_reserve_null_rounds_size_up_to_page(void **state)
{
	(void)state;
	mb_session_status st0 = status();
	uint8_t *base = reserve(NULL, 5000);
	assert_u64((uintptr_t)base % GRAN, 0);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, 2 * PAGE, MEM_RESERVE, ANY);
	CHECK_QUERY(base + 4999, base + PAGE, base, PAGE_NOACCESS, PAGE, MEM_RESERVE, ANY);
	mb_session_status st1 = status();
	assert_u64(st1.reservations, st0.reservations + 1);
	assert_u64(st1.reserved, st0.reserved + 2 * PAGE);
	assert_u64(st1.committed, st0.committed);

	uint8_t *one = reserve(NULL, 1);
	assert_u64((uintptr_t)one % GRAN, 0);
	CHECK_QUERY(one, one, one, PAGE_NOACCESS, PAGE, MEM_RESERVE, ANY);

	uint8_t *exact = reserve(NULL, 3 * GRAN);
	assert_u64((uintptr_t)exact % GRAN, 0);
	CHECK_QUERY(exact, exact, exact, PAGE_NOACCESS, 3 * GRAN, MEM_RESERVE, ANY);

	release(base);
	release(one);
	release(exact);
	st1 = status();
	assert_u64(st1.reservations, st0.reservations);
	assert_u64(st1.reserved, st0.reserved);
}

static void test_reserve_at_address_rounds_down_to_64k(void **state)
{
	(void)state;
	uint8_t *x = free_area(4 * GRAN);
	/* [x+0x1234, x+0x3234) touches pages 1..3: the region is [x, x+0x4000). */
	uint8_t *base = reserve(x + 0x1234, 0x2000);
	assert_ptr(base, x);
	CHECK_QUERY(x, x, x, PAGE_NOACCESS, 0x4000, MEM_RESERVE, ANY);
	/* The original address can be committed. */
	void *c = alloc_ok(x + 0x1234, 0x2000, MEM_COMMIT, PAGE_READWRITE);
	assert_ptr(c, x + 0x1000);
	CHECK_QUERY(x, x, x, PAGE_NOACCESS, 0x1000, MEM_RESERVE, ANY);
	CHECK_QUERY(x + 0x1000, x + 0x1000, x, PAGE_NOACCESS, 0x3000, MEM_COMMIT, PAGE_READWRITE);
	release(x);

	/* An address just below the next 64 KiB boundary still rounds down to x + 64K. */
	base = reserve(x + 2 * GRAN - 1, 2);
	assert_ptr(base, x + GRAN);
	CHECK_QUERY(x + GRAN, x + GRAN, x + GRAN, PAGE_NOACCESS, GRAN + PAGE, MEM_RESERVE, ANY);
	release(base);
}

static void test_reserve_top_down_is_a_hint(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_RESERVE | MEM_TOP_DOWN, PAGE_READWRITE);
	assert_u64((uintptr_t)base % GRAN, 0);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, GRAN, MEM_RESERVE, ANY);
	release(base);
}

static void test_reserve_over_reserved_range_fails(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, 4 * GRAN);
	mb_session_status st0 = status();
	ALLOC_FAILS(base, GRAN, MEM_RESERVE, PAGE_NOACCESS, MB_E_INVALID_ADDRESS);
	ALLOC_FAILS(base + GRAN, GRAN, MEM_RESERVE, PAGE_NOACCESS, MB_E_INVALID_ADDRESS);
	ALLOC_FAILS(base + 3 * GRAN, 2 * GRAN, MEM_RESERVE, PAGE_NOACCESS, MB_E_INVALID_ADDRESS);
	ALLOC_FAILS(base + GRAN, PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
		    MB_E_INVALID_ADDRESS);
	/* A range ending inside the reservation. */
	uint8_t *below = free_area(8 * GRAN);
	release(base);
	base = reserve(below + 4 * GRAN, GRAN);
	assert_ptr(base, below + 4 * GRAN);
	st0 = status();
	ALLOC_FAILS(below, 4 * GRAN + 1, MEM_RESERVE, PAGE_NOACCESS, MB_E_INVALID_ADDRESS);
	mb_session_status st1 = status();
	assert_u64(st1.reservations, st0.reservations);
	assert_u64(st1.reserved, st0.reserved);
	assert_u64(st1.committed, st0.committed);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, GRAN, MEM_RESERVE, ANY);
	release(base);
}

static void test_reserve_over_foreign_mapping_fails(void **state)
{
	(void)state;
	/* Memory this process mapped itself is reserved in Win32 terms: it must not be clobbered.
	 */
	size_t len = 3 * GRAN;
	uint8_t *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(raw != MAP_FAILED);
	uint8_t *own = (uint8_t *)(((uintptr_t)raw + GRAN - 1) & ~(uintptr_t)(GRAN - 1));
	memset(own, 0x6B, GRAN);
	mb_session_status st0 = status();
	ALLOC_FAILS(own, GRAN, MEM_RESERVE, PAGE_NOACCESS, MB_E_INVALID_ADDRESS);
	ALLOC_FAILS(own, PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, MB_E_INVALID_ADDRESS);
	assert_true(all_bytes(own, GRAN, 0x6B));

	/* The stack. */
	volatile uint8_t local[64];
	memset((void *)local, 0x3C, sizeof(local));
	ALLOC_FAILS((void *)local, PAGE, MEM_RESERVE, PAGE_NOACCESS, MB_E_INVALID_ADDRESS);
	assert_true(all_bytes((const void *)local, sizeof(local), 0x3C));
	mb_session_status st1 = status();
	assert_u64(st1.reservations, st0.reservations);
	assert_u64(st1.committed, st0.committed);
	munmap(raw, len);
}

/* ---- commit ---- */

static void test_commit_rounds_to_pages_touching_range(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, GRAN);
	mb_session_status st0 = status();
	/* 2 bytes straddling the boundary of pages 1 and 2: both pages. */
	void *c = alloc_ok(base + 2 * PAGE - 1, 2, MEM_COMMIT, PAGE_READWRITE);
	assert_ptr(c, base + PAGE);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, PAGE, MEM_RESERVE, ANY);
	CHECK_QUERY(base + PAGE, base + PAGE, base, PAGE_NOACCESS, 2 * PAGE, MEM_COMMIT,
		    PAGE_READWRITE);
	CHECK_QUERY(base + 3 * PAGE, base + 3 * PAGE, base, PAGE_NOACCESS, GRAN - 3 * PAGE,
		    MEM_RESERVE, ANY);
	assert_u64(status().committed, st0.committed + 2 * PAGE);

	/* One byte in the middle of page 5: that page only, *mem rounded down. */
	c = alloc_ok(base + 5 * PAGE + 100, 1, MEM_COMMIT, PAGE_READONLY);
	assert_ptr(c, base + 5 * PAGE);
	CHECK_QUERY(base + 5 * PAGE, base + 5 * PAGE, base, PAGE_NOACCESS, PAGE, MEM_COMMIT,
		    PAGE_READONLY);
	CHECK_QUERY(base + 6 * PAGE, base + 6 * PAGE, base, PAGE_NOACCESS, GRAN - 6 * PAGE,
		    MEM_RESERVE, ANY);
	assert_u64(status().committed, st0.committed + 3 * PAGE);

	/* A page-sized range starting mid-page touches two pages. */
	c = alloc_ok(base + 8 * PAGE + 1, PAGE, MEM_COMMIT, PAGE_READWRITE);
	assert_ptr(c, base + 8 * PAGE);
	CHECK_QUERY(base + 8 * PAGE, base + 8 * PAGE, base, PAGE_NOACCESS, 2 * PAGE, MEM_COMMIT,
		    PAGE_READWRITE);
	assert_u64(status().committed, st0.committed + 5 * PAGE);
	release(base);
	assert_u64(status().committed, st0.committed);
}

static void test_commit_without_reserve_fails(void **state)
{
	(void)state;
	uint8_t *x = free_area(2 * GRAN);
	mb_session_status st0 = status();
	ALLOC_FAILS(x, PAGE, MEM_COMMIT, PAGE_READWRITE, MB_E_INVALID_ADDRESS);
	ALLOC_FAILS(x + PAGE + 7, 10, MEM_COMMIT, PAGE_READWRITE, MB_E_INVALID_ADDRESS);
	mb_session_status st1 = status();
	assert_u64(st1.reservations, st0.reservations);
	assert_u64(st1.committed, st0.committed);
	CHECK_FREE(x, x, 2 * GRAN);
	/* MEM_COMMIT at an address this process mapped itself. */
	static uint8_t data[3 * PAGE];
	ALLOC_FAILS(data, PAGE, MEM_COMMIT, PAGE_READWRITE, MB_E_INVALID_ADDRESS);
}

static void test_commit_past_region_end_fails_and_commits_nothing(void **state)
{
	(void)state;
	uint8_t *x = free_area(2 * GRAN);
	uint8_t *base = reserve(x, 4 * PAGE);
	assert_ptr(base, x);
	mb_session_status st0 = status();
	/* Pages 2..4: page 4 is outside the 4-page region. */
	ALLOC_FAILS(base + 2 * PAGE, 3 * PAGE, MEM_COMMIT, PAGE_READWRITE, MB_E_INVALID_ADDRESS);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, 4 * PAGE, MEM_RESERVE, ANY);
	assert_u64(status().committed, st0.committed);

	/* Two adjacent reservations: a commit may not span both. */
	release(base);
	uint8_t *a = reserve(x, GRAN);
	uint8_t *b = reserve(x + GRAN, GRAN);
	assert_ptr(a, x);
	assert_ptr(b, x + GRAN);
	ALLOC_FAILS(a + GRAN - PAGE, 2 * PAGE, MEM_COMMIT, PAGE_READWRITE, MB_E_INVALID_ADDRESS);
	CHECK_QUERY(a, a, a, PAGE_NOACCESS, GRAN, MEM_RESERVE, ANY);
	CHECK_QUERY(b, b, b, PAGE_NOACCESS, GRAN, MEM_RESERVE, ANY);
	assert_u64(status().committed, st0.committed);
	release(a);
	release(b);
}

static void test_commit_null_address_reserves_and_commits(void **state)
{
	(void)state;
	mb_session_status st0 = status();
	uint8_t *p = alloc_ok(NULL, 3 * PAGE + 1, MEM_COMMIT, PAGE_READWRITE);
	assert_u64((uintptr_t)p % GRAN, 0);
	CHECK_QUERY(p, p, p, PAGE_READWRITE, 4 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st1 = status();
	assert_u64(st1.reservations, st0.reservations + 1);
	assert_u64(st1.reserved, st0.reserved + 4 * PAGE);
	assert_u64(st1.committed, st0.committed + 4 * PAGE);
	assert_true(all_bytes(p, 4 * PAGE, 0));
	memset(p, 0x11, 4 * PAGE);

	uint8_t *q = alloc_ok(NULL, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READONLY);
	assert_u64((uintptr_t)q % GRAN, 0);
	CHECK_QUERY(q, q, q, PAGE_READONLY, GRAN, MEM_COMMIT, PAGE_READONLY);
	assert_true(all_bytes(q, GRAN, 0));
	release(p);
	release(q);
	st1 = status();
	assert_u64(st1.reservations, st0.reservations);
	assert_u64(st1.committed, st0.committed);
}

static void test_recommit_succeeds_and_is_not_charged_twice(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, GRAN);
	mb_session_status st0 = status();
	void *c = alloc_ok(base, 2 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	assert_ptr(c, base);
	assert_u64(status().committed, st0.committed + 2 * PAGE);
	c = alloc_ok(base, 2 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	assert_ptr(c, base);
	assert_u64(status().committed, st0.committed + 2 * PAGE);
	/* Overlapping: pages 1..3, of which page 1 is committed. */
	c = alloc_ok(base + PAGE, 3 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	assert_ptr(c, base + PAGE);
	assert_u64(status().committed, st0.committed + 4 * PAGE);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, 4 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	/* The whole region, with pages 0..3 committed already. */
	alloc_ok(base, GRAN, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed + GRAN);
	assert_u64(st1.total_committed, st0.total_committed + GRAN);
	release(base);
	assert_u64(status().committed, st0.committed);
}

static void test_fresh_commit_reads_zero(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, 4 * GRAN);
	uint8_t *c = alloc_ok(base, 4 * GRAN, MEM_COMMIT, PAGE_READWRITE);
	assert_true(all_bytes(c, 4 * GRAN, 0));
	release(base);
	/* A region released with dirty pages, reserved and committed again, reads zero. */
	base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	memset(base, 0xEE, GRAN);
	release(base);
	uint8_t *again = reserve(base, GRAN);
	assert_ptr(again, base);
	alloc_ok(again, GRAN, MEM_COMMIT, PAGE_READWRITE);
	assert_true(all_bytes(again, GRAN, 0));
	release(again);
}

static void test_data_survives_recommit(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	for (size_t i = 0; i < GRAN; i++)
		base[i] = (uint8_t)(i * 7 + 3);
	alloc_ok(base, GRAN, MEM_COMMIT, PAGE_READWRITE);
	alloc_ok(base + PAGE + 5, 10, MEM_COMMIT, PAGE_READWRITE);
	for (size_t i = 0; i < GRAN; i++)
		if (base[i] != (uint8_t)(i * 7 + 3))
			fail_msg("byte %zu changed by a re-commit: 0x%02x", i, base[i]);
	release(base);
}

static void test_decommit_then_commit_reads_zero(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st0 = status();
	memset(base, 0x77, GRAN);
	/* Decommit pages 2..3 (a range touching them). */
	assert_hr(mb_virtual_free(g_c, base + 2 * PAGE + 10, PAGE, MEM_DECOMMIT), S_OK);
	CHECK_QUERY(base + 2 * PAGE, base + 2 * PAGE, base, PAGE_READWRITE, 2 * PAGE, MEM_RESERVE,
		    ANY);
	assert_u64(status().committed, st0.committed - 2 * PAGE);
	alloc_ok(base + 2 * PAGE, 2 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	assert_u64(status().committed, st0.committed);
	assert_true(all_bytes(base + 2 * PAGE, 2 * PAGE, 0));
	assert_true(all_bytes(base, 2 * PAGE, 0x77));
	assert_true(all_bytes(base + 4 * PAGE, GRAN - 4 * PAGE, 0x77));
	release(base);
}

/* ---- decommit / release ---- */

static void test_decommit_uncommitted_pages_succeeds(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, GRAN);
	mb_session_status st0 = status();
	assert_hr(mb_virtual_free(g_c, base, 4 * PAGE, MEM_DECOMMIT), S_OK);
	assert_hr(mb_virtual_free(g_c, base + 7 * PAGE + 3, 1, MEM_DECOMMIT), S_OK);
	assert_hr(mb_virtual_free(g_c, base, 0, MEM_DECOMMIT), S_OK);
	/* Mixed: page 1 committed, pages 0 and 2 not. */
	alloc_ok(base + PAGE, PAGE, MEM_COMMIT, PAGE_READWRITE);
	assert_hr(mb_virtual_free(g_c, base, 3 * PAGE, MEM_DECOMMIT), S_OK);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, GRAN, MEM_RESERVE, ANY);
	assert_u64(status().committed, st0.committed);
	release(base);
}

static void test_decommit_size0_at_base_is_whole_region(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, 3 * GRAN + 5 * PAGE);
	mb_session_status st0 = status();
	alloc_ok(base + PAGE, 2 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	alloc_ok(base + GRAN, GRAN, MEM_COMMIT, PAGE_READONLY);
	alloc_ok(base + 3 * GRAN + 4 * PAGE, PAGE, MEM_COMMIT, PAGE_READWRITE);
	assert_u64(status().committed, st0.committed + 19 * PAGE);
	assert_hr(mb_virtual_free(g_c, base, 0, MEM_DECOMMIT), S_OK);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, 3 * GRAN + 5 * PAGE, MEM_RESERVE, ANY);
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.reservations, st0.reservations);
	release(base);
}

static void test_decommit_size0_not_at_base_fails(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st0 = status();
	assert_hr(mb_virtual_free(g_c, base + PAGE, 0, MEM_DECOMMIT), MB_E_INVALID_ADDRESS);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	assert_u64(status().committed, st0.committed);
	release(base);
}

/*
 * A decommit that does not end inside the reservation it starts in fails with E_INVALIDARG (NT's
 * STATUS_UNABLE_TO_FREE_VM is ERROR_INVALID_PARAMETER; ReactOS's NtFreeVirtualMemory test) and
 * decommits nothing: past the end, over the free tail of a 64 KiB span, into the next reservation.
 */
static void test_decommit_past_reservation_end_is_invalidarg(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	memset(base, 0x5c, GRAN);
	mb_session_status st0 = status();
	assert_hr(mb_virtual_free(g_c, base + GRAN - PAGE, 2 * PAGE, MEM_DECOMMIT), E_INVALIDARG);
	assert_hr(mb_virtual_free(g_c, base, GRAN + 1, MEM_DECOMMIT), E_INVALIDARG);
	assert_hr(mb_virtual_free(g_c, base + 1, GRAN, MEM_DECOMMIT), E_INVALIDARG);
	assert_hr(mb_virtual_free(g_c, base, SIZE_MAX, MEM_DECOMMIT), E_INVALIDARG);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	assert_true(all_bytes(base, GRAN, 0x5c));
	assert_u64(status().committed, st0.committed);
	/* One byte in, ending inside: the page it touches. */
	assert_hr(mb_virtual_free(g_c, base + 1, PAGE - 1, MEM_DECOMMIT), S_OK);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, PAGE, MEM_RESERVE, ANY);
	release(base);

	/* A reservation of 3 pages, then free pages up to the 64 KiB boundary. */
	uint8_t *small = alloc_ok(NULL, 3 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	assert_hr(mb_virtual_free(g_c, small, 4 * PAGE, MEM_DECOMMIT), E_INVALIDARG);
	CHECK_QUERY(small, small, small, PAGE_READWRITE, 3 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	release(small);

	/* Two adjacent reservations: one decommit may not cover both. */
	uint8_t *area = free_area(2 * GRAN);
	uint8_t *a = alloc_ok(area, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
	uint8_t *b = alloc_ok(area + GRAN, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st1 = status();
	assert_hr(mb_virtual_free(g_c, a, 2 * GRAN, MEM_DECOMMIT), E_INVALIDARG);
	assert_hr(mb_virtual_free(g_c, a + GRAN - PAGE, 2 * PAGE, MEM_DECOMMIT), E_INVALIDARG);
	CHECK_QUERY(a, a, a, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	CHECK_QUERY(b, b, b, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	assert_u64(status().committed, st1.committed);
	release(a);
	release(b);
}

static void test_release_with_size_is_invalidarg(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st0 = status();
	assert_hr(mb_virtual_free(g_c, base, GRAN, MEM_RELEASE), E_INVALIDARG);
	assert_hr(mb_virtual_free(g_c, base, 1, MEM_RELEASE), E_INVALIDARG);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.reservations, st0.reservations);
	release(base);
}

static void test_release_not_at_base_is_invalid_address(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, 2 * GRAN, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st0 = status();
	assert_hr(mb_virtual_free(g_c, base + PAGE, 0, MEM_RELEASE), MB_E_INVALID_ADDRESS);
	assert_hr(mb_virtual_free(g_c, base + GRAN, 0, MEM_RELEASE), MB_E_INVALID_ADDRESS);
	assert_hr(mb_virtual_free(g_c, base + 1, 0, MEM_RELEASE), MB_E_INVALID_ADDRESS);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, 2 * GRAN, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.reservations, st0.reservations);
	release(base);
}

static void test_free_type_must_be_decommit_or_release(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st0 = status();
	assert_hr(mb_virtual_free(g_c, base, 0, MEM_DECOMMIT | MEM_RELEASE), E_INVALIDARG);
	assert_hr(mb_virtual_free(g_c, base, PAGE, MEM_DECOMMIT | MEM_RELEASE), E_INVALIDARG);
	assert_hr(mb_virtual_free(g_c, base, 0, 0), E_INVALIDARG);
	assert_hr(mb_virtual_free(g_c, base, 0, MEM_RELEASE | 0x10000000), E_INVALIDARG);
	assert_hr(mb_virtual_free(g_c, base, PAGE, MEM_COMMIT), E_INVALIDARG);
	assert_hr(mb_virtual_free(g_c, base, 0, MEM_COALESCE_PLACEHOLDERS), E_INVALIDARG);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.reservations, st0.reservations);
	release(base);
}

static void test_free_of_memory_not_allocated_here(void **state)
{
	(void)state;
	volatile uint8_t local[32];
	uint8_t *heap = malloc(100);
	static uint8_t data[64];
	assert_non_null(heap);
	local[0] = 1;
	assert_hr(mb_virtual_free(g_c, (void *)local, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
	assert_hr(mb_virtual_free(g_c, (void *)local, 16, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
	assert_hr(mb_virtual_free(g_c, heap, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
	assert_hr(mb_virtual_free(g_c, heap, 100, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
	assert_hr(mb_virtual_free(g_c, data, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
	assert_hr(mb_virtual_free(g_c, NULL, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
	assert_hr(mb_virtual_free(g_c, NULL, PAGE, MEM_DECOMMIT), HOST_E_INVALIDOPERATION);
	free(heap);
	/* A region already released is no longer allocated through this client. */
	uint8_t *base = reserve(NULL, GRAN);
	release(base);
	assert_hr(mb_virtual_free(g_c, base, 0, MEM_RELEASE), HOST_E_INVALIDOPERATION);
}

static void test_release_frees_everything(void **state)
{
	(void)state;
	mb_session_status st0 = status();
	uint8_t *base = reserve(NULL, 2 * GRAN);
	alloc_ok(base + PAGE, 3 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	alloc_ok(base + GRAN, PAGE, MEM_COMMIT, PAGE_READONLY);
	release(base);
	CHECK_FREE(base, base, 2 * GRAN);
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.reserved, st0.reserved);
	assert_u64(st1.reservations, st0.reservations);
	assert_u64(st1.total_committed, st0.total_committed);
}

/* ---- protections and allocation types ---- */

static const DWORD k_valid_protect[] = {
    PAGE_NOACCESS,
    PAGE_READONLY,
    PAGE_READWRITE,
    PAGE_EXECUTE,
    PAGE_EXECUTE_READ,
    PAGE_EXECUTE_READWRITE,
    PAGE_READONLY | PAGE_NOCACHE,
    PAGE_READWRITE | PAGE_NOCACHE,
    PAGE_EXECUTE | PAGE_NOCACHE,
    PAGE_EXECUTE_READ | PAGE_NOCACHE,
    PAGE_EXECUTE_READWRITE | PAGE_NOCACHE,
    PAGE_READONLY | PAGE_WRITECOMBINE,
    PAGE_READWRITE | PAGE_WRITECOMBINE,
    PAGE_EXECUTE | PAGE_WRITECOMBINE,
    PAGE_EXECUTE_READ | PAGE_WRITECOMBINE,
    PAGE_EXECUTE_READWRITE | PAGE_WRITECOMBINE,
};

static const DWORD k_invalid_protect[] = {
    0,
    PAGE_WRITECOPY,
    PAGE_EXECUTE_WRITECOPY,
    PAGE_READWRITE | PAGE_GUARD,
    PAGE_READONLY | PAGE_GUARD,
    PAGE_GUARD,
    PAGE_GUARD | PAGE_NOACCESS,
    PAGE_NOCACHE | PAGE_NOACCESS,
    PAGE_WRITECOMBINE | PAGE_NOACCESS,
    PAGE_READWRITE | PAGE_NOCACHE | PAGE_WRITECOMBINE,
    PAGE_NOCACHE,
    PAGE_WRITECOMBINE,
    PAGE_READONLY | PAGE_READWRITE,
    PAGE_EXECUTE | PAGE_READWRITE,
    PAGE_NOACCESS | PAGE_READONLY,
    PAGE_EXECUTE_READ | PAGE_EXECUTE_READWRITE,
    PAGE_READWRITE | 0x800,
    PAGE_READWRITE | 0x80000000u,
    PAGE_READWRITE | PAGE_TARGETS_INVALID,
    0x1000,
};

static void test_alloc_valid_protections(void **state)
{
	(void)state;
	mb_session_status st0 = status();
	for (size_t i = 0; i < sizeof(k_valid_protect) / sizeof(k_valid_protect[0]); i++) {
		DWORD p = k_valid_protect[i];
		DWORD other = p == PAGE_READWRITE ? PAGE_READONLY : PAGE_READWRITE;
		/* Reserve+commit at once. */
		uint8_t *m = alloc_ok(NULL, 2 * PAGE, MEM_RESERVE | MEM_COMMIT, p);
		CHECK_QUERY(m, m, m, p, 2 * PAGE, MEM_COMMIT, p);
		release(m);
		/* Reserve with p, commit with another protection and the other way round. */
		m = alloc_ok(NULL, GRAN, MEM_RESERVE, p);
		CHECK_QUERY(m, m, m, p, GRAN, MEM_RESERVE, ANY);
		alloc_ok(m, PAGE, MEM_COMMIT, other);
		alloc_ok(m + PAGE, PAGE, MEM_COMMIT, p);
		CHECK_QUERY(m, m, m, p, PAGE, MEM_COMMIT, other);
		CHECK_QUERY(m + PAGE, m + PAGE, m, p, PAGE, MEM_COMMIT, p);
		release(m);
	}
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.reservations, st0.reservations);
}

static void test_alloc_invalid_protections(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, GRAN);
	mb_session_status st0 = status();
	for (size_t i = 0; i < sizeof(k_invalid_protect) / sizeof(k_invalid_protect[0]); i++) {
		DWORD p = k_invalid_protect[i];
		ALLOC_FAILS(NULL, PAGE, MEM_RESERVE, p, E_INVALIDARG);
		ALLOC_FAILS(NULL, PAGE, MEM_RESERVE | MEM_COMMIT, p, E_INVALIDARG);
		ALLOC_FAILS(NULL, PAGE, MEM_COMMIT, p, E_INVALIDARG);
		ALLOC_FAILS(base, PAGE, MEM_COMMIT, p, E_INVALIDARG);
	}
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, GRAN, MEM_RESERVE, ANY);
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.reservations, st0.reservations);
	release(base);
}

static void test_alloc_invalid_types(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, GRAN);
	mb_session_status st0 = status();
	static const DWORD types[] = {
	    0,
	    MEM_TOP_DOWN,
	    MEM_RESERVE | MEM_COMMIT | MEM_LARGE_PAGES,
	    MEM_RESERVE | MEM_LARGE_PAGES,
	    MEM_RESERVE | MEM_PHYSICAL,
	    MEM_RESERVE | MEM_WRITE_WATCH,
	    MEM_RESERVE | MEM_COMMIT | MEM_WRITE_WATCH,
	    MEM_RESERVE | 0x4,
	    MEM_COMMIT | 0x10000000,
	    MEM_RESERVE | MEM_DECOMMIT,
	    MEM_COMMIT | MEM_RELEASE,
	    MEM_RESERVE | 0x80000000u,
	};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		ALLOC_FAILS(NULL, GRAN, types[i], PAGE_READWRITE, E_INVALIDARG);
		ALLOC_FAILS(base, PAGE, types[i], PAGE_READWRITE, E_INVALIDARG);
	}
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, GRAN, MEM_RESERVE, ANY);
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.reservations, st0.reservations);
	release(base);
}

static void test_reset_must_stand_alone(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st0 = status();
	ALLOC_FAILS(base, PAGE, MEM_RESET | MEM_COMMIT, PAGE_READWRITE, E_INVALIDARG);
	ALLOC_FAILS(base, PAGE, MEM_RESET | MEM_RESERVE, PAGE_READWRITE, E_INVALIDARG);
	ALLOC_FAILS(base, PAGE, MEM_RESET | MEM_RESET_UNDO, PAGE_READWRITE, E_INVALIDARG);
	ALLOC_FAILS(base, PAGE, MEM_RESET_UNDO | MEM_COMMIT, PAGE_READWRITE, E_INVALIDARG);
	ALLOC_FAILS(NULL, PAGE, MEM_RESET, PAGE_READWRITE, E_INVALIDARG);
	ALLOC_FAILS(NULL, PAGE, MEM_RESET_UNDO, PAGE_READWRITE, E_INVALIDARG);
	ALLOC_FAILS(base, 0, MEM_RESET, PAGE_READWRITE, E_INVALIDARG);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	assert_u64(status().committed, st0.committed);
	release(base);
}

static void test_reset_with_invalid_protect(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	for (size_t i = 0; i < sizeof(k_invalid_protect) / sizeof(k_invalid_protect[0]); i++)
		ALLOC_FAILS(base, PAGE, MEM_RESET, k_invalid_protect[i], E_INVALIDARG);
	/* flProtect is ignored by MEM_RESET: a valid but different value does not change pages. */
	void *mem = NULL;
	assert_hr(mb_virtual_alloc(g_c, base, PAGE, MEM_RESET, PAGE_NOACCESS, eTaskCritical, &mem),
		  S_OK);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	release(base);
}

static void test_reset_then_reset_undo(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	mb_session_status st0 = status();
	for (size_t i = 0; i < GRAN; i++)
		base[i] = (uint8_t)(i ^ (i >> 8));
	void *mem = NULL;
	assert_hr(mb_virtual_alloc(g_c, base + PAGE, 4 * PAGE, MEM_RESET, PAGE_READWRITE,
				   eTaskCritical, &mem),
		  S_OK);
	/* Still committed and charged. */
	CHECK_QUERY(base, base, base, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	assert_u64(status().committed, st0.committed);
	mem = NULL;
	assert_hr(mb_virtual_alloc(g_c, base + PAGE, 4 * PAGE, MEM_RESET_UNDO, PAGE_READWRITE,
				   eTaskCritical, &mem),
		  S_OK);
	/* MEM_RESET_UNDO succeeded: the data is intact. */
	for (size_t i = 0; i < GRAN; i++)
		if (base[i] != (uint8_t)(i ^ (i >> 8)))
			fail_msg("byte %zu lost after MEM_RESET + successful MEM_RESET_UNDO", i);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	assert_u64(status().committed, st0.committed);
	/* Pages stay usable after a reset without undo. */
	assert_hr(mb_virtual_alloc(g_c, base, GRAN, MEM_RESET, PAGE_READWRITE, eTaskCritical, &mem),
		  S_OK);
	memset(base, 0x42, GRAN);
	assert_true(all_bytes(base, GRAN, 0x42));
	release(base);
}

/*
 * MEM_RESET of reserved, uncommitted pages succeeds and changes nothing (Wine's test_VirtualAlloc,
 * run against Windows: the address comes back and the pages stay MEM_RESERVE); over a mix, only
 * the committed pages are reset. One running past the reservation's end: MB_E_INVALID_ADDRESS.
 */
static void test_reset_of_reserved_pages_changes_nothing(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, GRAN);
	mb_session_status st0 = status();
	void *mem = NULL;
	assert_hr(
	    mb_virtual_alloc(g_c, base + PAGE, PAGE, MEM_RESET, PAGE_NOACCESS, eTaskCritical, &mem),
	    S_OK);
	assert_ptr_equal(mem, base + PAGE);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, GRAN, MEM_RESERVE, ANY);
	mem = NULL;
	assert_hr(
	    mb_virtual_alloc(g_c, base, GRAN, MEM_RESET_UNDO, PAGE_READWRITE, eTaskCritical, &mem),
	    S_OK);
	assert_ptr_equal(mem, base);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, GRAN, MEM_RESERVE, ANY);
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.reservations, st0.reservations);

	/* Pages 2-5 committed, the rest reserved: reset and undo over all of it. */
	alloc_ok(base + 2 * PAGE, 4 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	memset(base + 2 * PAGE, 0x3d, 4 * PAGE);
	assert_hr(
	    mb_virtual_alloc(g_c, base, 8 * PAGE, MEM_RESET, PAGE_READWRITE, eTaskCritical, &mem),
	    S_OK);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, 2 * PAGE, MEM_RESERVE, ANY);
	CHECK_QUERY(base + 2 * PAGE, base + 2 * PAGE, base, PAGE_NOACCESS, 4 * PAGE, MEM_COMMIT,
		    PAGE_READWRITE);
	CHECK_QUERY(base + 6 * PAGE, base + 6 * PAGE, base, PAGE_NOACCESS, GRAN - 6 * PAGE,
		    MEM_RESERVE, ANY);
	assert_hr(mb_virtual_alloc(g_c, base, 8 * PAGE, MEM_RESET_UNDO, PAGE_READWRITE,
				   eTaskCritical, &mem),
		  S_OK);
	assert_true(all_bytes(base + 2 * PAGE, 4 * PAGE, 0x3d));
	assert_u64(status().committed, st0.committed + 4 * PAGE);

	/* Past the reservation's end, and outside every reservation. */
	ALLOC_FAILS(base + GRAN - PAGE, 2 * PAGE, MEM_RESET, PAGE_READWRITE, MB_E_INVALID_ADDRESS);
	release(base);
	ALLOC_FAILS(base, PAGE, MEM_RESET, PAGE_READWRITE, MB_E_INVALID_ADDRESS);
}

static void test_alloc_size_zero(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, GRAN);
	mb_session_status st0 = status();
	ALLOC_FAILS(NULL, 0, MEM_RESERVE, PAGE_READWRITE, E_INVALIDARG);
	ALLOC_FAILS(NULL, 0, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, E_INVALIDARG);
	ALLOC_FAILS(NULL, 0, MEM_COMMIT, PAGE_READWRITE, E_INVALIDARG);
	ALLOC_FAILS(base, 0, MEM_COMMIT, PAGE_READWRITE, E_INVALIDARG);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, GRAN, MEM_RESERVE, ANY);
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.reservations, st0.reservations);
	release(base);
}

static void test_alloc_level_out_of_range(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, GRAN);
	mb_session_status st0 = status();
	static const int levels[] = {3, 4, -1, 100, 0x7FFFFFFF};
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		alloc_fails(NULL, PAGE, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, levels[i],
			    E_INVALIDARG, __FILE__, __LINE__);
		alloc_fails(NULL, PAGE, MEM_RESERVE, PAGE_READWRITE, levels[i], E_INVALIDARG,
			    __FILE__, __LINE__);
		alloc_fails(base, PAGE, MEM_COMMIT, PAGE_READWRITE, levels[i], E_INVALIDARG,
			    __FILE__, __LINE__);
	}
	/* The three defined levels are accepted. */
	for (int l = eTaskCritical; l <= eProcessCritical; l++) {
		void *mem = NULL;
		assert_hr(mb_virtual_alloc(g_c, base + (size_t)l * PAGE, PAGE, MEM_COMMIT,
					   PAGE_READWRITE, (EMemoryCriticalLevel)l, &mem),
			  S_OK);
		assert_ptr(mem, base + (size_t)l * PAGE);
	}
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed + 3 * PAGE);
	assert_u64(st1.reservations, st0.reservations);
	release(base);
}

static void test_alloc_null_out_pointer(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, GRAN);
	mb_session_status st0 = status();
	assert_hr(
	    mb_virtual_alloc(g_c, NULL, GRAN, MEM_RESERVE, PAGE_READWRITE, eTaskCritical, NULL),
	    E_POINTER);
	assert_hr(mb_virtual_alloc(g_c, NULL, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				   eTaskCritical, NULL),
		  E_POINTER);
	assert_hr(
	    mb_virtual_alloc(g_c, base, PAGE, MEM_COMMIT, PAGE_READWRITE, eTaskCritical, NULL),
	    E_POINTER);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, GRAN, MEM_RESERVE, ANY);
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.reservations, st0.reservations);
	release(base);
}

/* ---- VirtualQuery ---- */

static void test_query_short_buffer(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, GRAN);
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written = 777;
	assert_hr(mb_virtual_query(g_c, base, &mbi, sizeof(mbi) - 1, &written), MB_E_BAD_LENGTH);
	assert_u64(written, 0);
	written = 777;
	assert_hr(mb_virtual_query(g_c, base, &mbi, 0, &written), MB_E_BAD_LENGTH);
	assert_u64(written, 0);
	written = 777;
	assert_hr(mb_virtual_query(g_c, base, &mbi, 28, &written), MB_E_BAD_LENGTH);
	assert_u64(written, 0);
	assert_u64((uint32_t)MB_E_BAD_LENGTH, 0x80070018u);
	/* A longer buffer is fine; exactly sizeof(MEMORY_BASIC_INFORMATION) is written. */
	struct {
		MEMORY_BASIC_INFORMATION m;
		unsigned char tail[16];
	} big;
	memset(&big, 0xCD, sizeof(big));
	written = 0;
	assert_hr(mb_virtual_query(g_c, base, &big.m, sizeof(big), &written), S_OK);
	assert_u64(written, sizeof(MEMORY_BASIC_INFORMATION));
	assert_ptr(big.m.BaseAddress, base);
	assert_true(all_bytes(big.tail, sizeof(big.tail), 0xCD));
	release(base);
}

static void test_query_null_pointers(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, GRAN);
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written = 777;
	assert_hr(mb_virtual_query(g_c, base, NULL, sizeof(mbi), &written), E_POINTER);
	assert_u64(written, 0);
	assert_hr(mb_virtual_query(g_c, base, &mbi, sizeof(mbi), NULL), E_POINTER);
	assert_hr(mb_virtual_query(g_c, base, NULL, sizeof(mbi), NULL), E_POINTER);
	release(base);
}

static void test_query_runs_split_and_never_cross_reservations(void **state)
{
	(void)state;
	uint8_t *x = free_area(2 * GRAN);
	uint8_t *a = reserve(x, GRAN);
	uint8_t *b = alloc_ok(x + GRAN, GRAN, MEM_RESERVE, PAGE_READWRITE);
	assert_ptr(a, x);
	assert_ptr(b, x + GRAN);
	alloc_ok(a, GRAN, MEM_COMMIT, PAGE_READWRITE);
	alloc_ok(b, GRAN, MEM_COMMIT, PAGE_READWRITE);
	/* Same state and protection on both sides of the boundary: still two runs. */
	CHECK_QUERY(a, a, a, PAGE_NOACCESS, GRAN, MEM_COMMIT, PAGE_READWRITE);
	CHECK_QUERY(a + 5 * PAGE, a + 5 * PAGE, a, PAGE_NOACCESS, GRAN - 5 * PAGE, MEM_COMMIT,
		    PAGE_READWRITE);
	CHECK_QUERY(b, b, b, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);

	DWORD old = 0;
	assert_hr(mb_virtual_protect(g_c, a + 3 * PAGE, PAGE, PAGE_READONLY, &old), S_OK);
	assert_hr(mb_virtual_free(g_c, a + 8 * PAGE, 2 * PAGE, MEM_DECOMMIT), S_OK);
	assert_hr(mb_virtual_protect(g_c, a + 12 * PAGE, 4 * PAGE, PAGE_EXECUTE_READ, &old), S_OK);
	CHECK_QUERY(a, a, a, PAGE_NOACCESS, 3 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	CHECK_QUERY(a + 3 * PAGE, a + 3 * PAGE, a, PAGE_NOACCESS, PAGE, MEM_COMMIT, PAGE_READONLY);
	CHECK_QUERY(a + 4 * PAGE, a + 4 * PAGE, a, PAGE_NOACCESS, 4 * PAGE, MEM_COMMIT,
		    PAGE_READWRITE);
	CHECK_QUERY(a + 8 * PAGE, a + 8 * PAGE, a, PAGE_NOACCESS, 2 * PAGE, MEM_RESERVE, ANY);
	CHECK_QUERY(a + 10 * PAGE, a + 10 * PAGE, a, PAGE_NOACCESS, 2 * PAGE, MEM_COMMIT,
		    PAGE_READWRITE);
	CHECK_QUERY(a + 12 * PAGE, a + 12 * PAGE, a, PAGE_NOACCESS, 4 * PAGE, MEM_COMMIT,
		    PAGE_EXECUTE_READ);
	CHECK_QUERY(b, b, b, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);

	/* Walking the runs covers the region exactly, each run inside it. */
	size_t total = 0, runs = 0;
	for (uint8_t *p = a; p < a + GRAN;) {
		MEMORY_BASIC_INFORMATION m = query(p);
		assert_ptr(m.BaseAddress, p);
		assert_ptr(m.AllocationBase, a);
		assert_true(m.RegionSize > 0 && m.RegionSize % PAGE == 0);
		assert_true(p + m.RegionSize <= a + GRAN);
		total += m.RegionSize;
		runs++;
		p += m.RegionSize;
	}
	assert_u64(total, GRAN);
	assert_u64(runs, 6);

	/* Reserved pages at the start of b and committed after: split by state. */
	assert_hr(mb_virtual_free(g_c, b, 2 * PAGE, MEM_DECOMMIT), S_OK);
	CHECK_QUERY(b, b, b, PAGE_READWRITE, 2 * PAGE, MEM_RESERVE, ANY);
	CHECK_QUERY(b + 2 * PAGE, b + 2 * PAGE, b, PAGE_READWRITE, GRAN - 2 * PAGE, MEM_COMMIT,
		    PAGE_READWRITE);
	release(a);
	release(b);
}

static void test_query_free_range_reaches_next_reservation(void **state)
{
	(void)state;
	uint8_t *x = free_area(16 * GRAN);
	uint8_t *a = reserve(x, GRAN);
	uint8_t *b = reserve(x + 8 * GRAN, GRAN);
	assert_ptr(a, x);
	assert_ptr(b, x + 8 * GRAN);
	CHECK_QUERY(x + GRAN, x + GRAN, NULL, ANY, 7 * GRAN, MEM_FREE, PAGE_NOACCESS);
	CHECK_QUERY(x + GRAN + 0x1234, x + GRAN + PAGE, NULL, ANY, 7 * GRAN - PAGE, MEM_FREE,
		    PAGE_NOACCESS);
	CHECK_QUERY(b - 1, b - PAGE, NULL, ANY, PAGE, MEM_FREE, PAGE_NOACCESS);
	CHECK_QUERY(b, b, b, PAGE_NOACCESS, GRAN, MEM_RESERVE, ANY);
	release(b);
	release(a);
}

static void test_query_unaligned_address_rounds_down(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, 4 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	CHECK_QUERY(base + 1, base, base, PAGE_READWRITE, 4 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	CHECK_QUERY(base + 2 * PAGE + 4095, base + 2 * PAGE, base, PAGE_READWRITE, 2 * PAGE,
		    MEM_COMMIT, PAGE_READWRITE);
	release(base);
}

static void test_query_address_limit(void **state)
{
	(void)state;
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T written = 777;
	uintptr_t limit = (uintptr_t)1 << 47;
	assert_hr(mb_virtual_query(g_c, (void *)limit, &mbi, sizeof(mbi), &written), E_INVALIDARG);
	assert_u64(written, 0);
	written = 777;
	assert_hr(mb_virtual_query(g_c, (void *)(limit + 12345), &mbi, sizeof(mbi), &written),
		  E_INVALIDARG);
	assert_u64(written, 0);
	written = 777;
	assert_hr(mb_virtual_query(g_c, (void *)UINTPTR_MAX, &mbi, sizeof(mbi), &written),
		  E_INVALIDARG);
	assert_u64(written, 0);
	/* The last page below the limit is free, up to the limit. */
	CHECK_QUERY((void *)(limit - 1), (void *)(limit - PAGE), NULL, ANY, PAGE, MEM_FREE,
		    PAGE_NOACCESS);
}

/* ---- VirtualProtect ---- */

static void test_protect_returns_first_page_old_protection(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	DWORD old = 0;
	assert_hr(mb_virtual_protect(g_c, base + PAGE, PAGE, PAGE_READONLY, &old), S_OK);
	assert_u64(old, PAGE_READWRITE);
	assert_hr(mb_virtual_protect(g_c, base, 4 * PAGE, PAGE_EXECUTE_READ, &old), S_OK);
	assert_u64(old, PAGE_READWRITE);
	assert_hr(mb_virtual_protect(g_c, base + PAGE, 2 * PAGE, PAGE_NOACCESS, &old), S_OK);
	assert_u64(old, PAGE_EXECUTE_READ);
	assert_hr(mb_virtual_protect(g_c, base + PAGE, PAGE, PAGE_READWRITE | PAGE_NOCACHE, &old),
		  S_OK);
	assert_u64(old, PAGE_NOACCESS);
	assert_hr(mb_virtual_protect(g_c, base + PAGE, PAGE, PAGE_READWRITE, &old), S_OK);
	assert_u64(old, PAGE_READWRITE | PAGE_NOCACHE);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, PAGE, MEM_COMMIT, PAGE_EXECUTE_READ);
	CHECK_QUERY(base + PAGE, base + PAGE, base, PAGE_READWRITE, PAGE, MEM_COMMIT,
		    PAGE_READWRITE);
	CHECK_QUERY(base + 2 * PAGE, base + 2 * PAGE, base, PAGE_READWRITE, PAGE, MEM_COMMIT,
		    PAGE_NOACCESS);
	CHECK_QUERY(base + 3 * PAGE, base + 3 * PAGE, base, PAGE_READWRITE, PAGE, MEM_COMMIT,
		    PAGE_EXECUTE_READ);
	CHECK_QUERY(base + 4 * PAGE, base + 4 * PAGE, base, PAGE_READWRITE, GRAN - 4 * PAGE,
		    MEM_COMMIT, PAGE_READWRITE);
	/* Every valid protection round-trips through VirtualProtect. */
	for (size_t i = 0; i < sizeof(k_valid_protect) / sizeof(k_valid_protect[0]); i++) {
		DWORD prev = i == 0 ? PAGE_READWRITE : k_valid_protect[i - 1];
		assert_hr(mb_virtual_protect(g_c, base + 8 * PAGE, PAGE, k_valid_protect[i], &old),
			  S_OK);
		assert_u64(old, prev);
		/* Pages 9.. are read-write: a read-write page 8 joins their run. */
		size_t run = k_valid_protect[i] == PAGE_READWRITE ? GRAN - 8 * PAGE : PAGE;
		CHECK_QUERY(base + 8 * PAGE, base + 8 * PAGE, base, PAGE_READWRITE, run, MEM_COMMIT,
			    k_valid_protect[i]);
	}
	release(base);
}

static void test_protect_affects_all_pages_touching_range(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	DWORD old = 0;
	/* 2 bytes straddling pages 0 and 1. */
	assert_hr(mb_virtual_protect(g_c, base + PAGE - 1, 2, PAGE_READONLY, &old), S_OK);
	assert_u64(old, PAGE_READWRITE);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, 2 * PAGE, MEM_COMMIT, PAGE_READONLY);
	CHECK_QUERY(base + 2 * PAGE, base + 2 * PAGE, base, PAGE_READWRITE, GRAN - 2 * PAGE,
		    MEM_COMMIT, PAGE_READWRITE);
	/* One byte in page 5. */
	assert_hr(mb_virtual_protect(g_c, base + 5 * PAGE + 99, 1, PAGE_NOACCESS, &old), S_OK);
	CHECK_QUERY(base + 5 * PAGE, base + 5 * PAGE, base, PAGE_READWRITE, PAGE, MEM_COMMIT,
		    PAGE_NOACCESS);
	CHECK_QUERY(base + 6 * PAGE, base + 6 * PAGE, base, PAGE_READWRITE, GRAN - 6 * PAGE,
		    MEM_COMMIT, PAGE_READWRITE);
	/* The mapping follows: pages 0-1 can be read, page 2 written. */
	assert_true(all_bytes(base, 2 * PAGE, 0));
	base[2 * PAGE] = 1;
	release(base);
}

static void test_protect_fails_on_uncommitted_pages_and_changes_nothing(void **state)
{
	(void)state;
	uint8_t *base = reserve(NULL, GRAN);
	alloc_ok(base, 2 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	alloc_ok(base + 3 * PAGE, 2 * PAGE, MEM_COMMIT, PAGE_EXECUTE_READ);
	DWORD old = 0;
	/* Page 2 is reserved only. */
	assert_hr(mb_virtual_protect(g_c, base, 5 * PAGE, PAGE_READONLY, &old),
		  MB_E_INVALID_ADDRESS);
	assert_hr(mb_virtual_protect(g_c, base + PAGE, 2 * PAGE, PAGE_READONLY, &old),
		  MB_E_INVALID_ADDRESS);
	assert_hr(mb_virtual_protect(g_c, base + 2 * PAGE, 1, PAGE_READONLY, &old),
		  MB_E_INVALID_ADDRESS);
	assert_hr(mb_virtual_protect(g_c, base + 5 * PAGE, PAGE, PAGE_READONLY, &old),
		  MB_E_INVALID_ADDRESS);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, 2 * PAGE, MEM_COMMIT, PAGE_READWRITE);
	CHECK_QUERY(base + 2 * PAGE, base + 2 * PAGE, base, PAGE_NOACCESS, PAGE, MEM_RESERVE, ANY);
	CHECK_QUERY(base + 3 * PAGE, base + 3 * PAGE, base, PAGE_NOACCESS, 2 * PAGE, MEM_COMMIT,
		    PAGE_EXECUTE_READ);
	CHECK_QUERY(base + 5 * PAGE, base + 5 * PAGE, base, PAGE_NOACCESS, GRAN - 5 * PAGE,
		    MEM_RESERVE, ANY);
	/* The mapping was not changed either: page 0 is still writable. */
	base[0] = 0x5A;
	base[2 * PAGE - 1] = 0x5A;
	release(base);
}

static void test_protect_fails_across_adjacent_reservations(void **state)
{
	(void)state;
	uint8_t *x = free_area(2 * GRAN);
	uint8_t *a = alloc_ok(x, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
	uint8_t *b = alloc_ok(x + GRAN, GRAN, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
	assert_ptr(a, x);
	assert_ptr(b, x + GRAN);
	DWORD old = 0;
	assert_hr(mb_virtual_protect(g_c, a + GRAN - PAGE, 2 * PAGE, PAGE_READONLY, &old),
		  MB_E_INVALID_ADDRESS);
	assert_hr(mb_virtual_protect(g_c, a + GRAN - 1, 2, PAGE_READONLY, &old),
		  MB_E_INVALID_ADDRESS);
	assert_hr(mb_virtual_protect(g_c, a, 2 * GRAN, PAGE_READONLY, &old), MB_E_INVALID_ADDRESS);
	CHECK_QUERY(a, a, a, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	CHECK_QUERY(b, b, b, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	a[GRAN - 1] = 1;
	b[0] = 1;
	release(a);
	release(b);
}

static void test_protect_argument_errors(void **state)
{
	(void)state;
	uint8_t *base = alloc_ok(NULL, GRAN, MEM_COMMIT, PAGE_READWRITE);
	DWORD old = 0;
	assert_hr(mb_virtual_protect(g_c, base, PAGE, PAGE_READONLY, NULL), E_POINTER);
	for (size_t i = 0; i < sizeof(k_invalid_protect) / sizeof(k_invalid_protect[0]); i++)
		assert_hr(mb_virtual_protect(g_c, base, PAGE, k_invalid_protect[i], &old),
			  E_INVALIDARG);
	CHECK_QUERY(base, base, base, PAGE_READWRITE, GRAN, MEM_COMMIT, PAGE_READWRITE);
	/* Free memory, and memory of this process not allocated through the client. */
	uint8_t *x = free_area(GRAN);
	assert_hr(mb_virtual_protect(g_c, x, PAGE, PAGE_READONLY, &old), MB_E_INVALID_ADDRESS);
	static uint8_t data[PAGE];
	assert_hr(mb_virtual_protect(g_c, data, 1, PAGE_READONLY, &old), MB_E_INVALID_ADDRESS);
	data[0] = 1;
	release(base);
}

/* ---- GetMemoryLoad ---- */

static void test_memory_load_sane(void **state)
{
	(void)state;
	DWORD load = 12345;
	SIZE_T avail = 0;
	assert_hr(mb_get_memory_load(g_c, &load, &avail), S_OK);
	mb_session_status st = status();
	assert_true(load <= 100);
	assert_true(avail > 0);
	assert_true(avail <= st.budget);
	assert_hr(mb_get_memory_load(g_c, NULL, &avail), E_POINTER);
	assert_hr(mb_get_memory_load(g_c, &load, NULL), E_POINTER);
}

/* ---- budget ---- */

static void test_budget_task_critical_refused_above_90_percent(void **state)
{
	(void)state;
	mb_session_status st0 = status();
	assert_true(st0.budget >= 32 * MiB && st0.budget <= 128 * MiB);
	uint64_t ceiling = st0.budget * 9 / 10;
	assert_true(st0.total_committed + 4 * MiB < ceiling);
	size_t room = (size_t)(ceiling - st0.total_committed) & ~(PAGE - 1);
	size_t over = room + MiB;

	/* Reserve+commit over the ceiling: refused, nothing reserved, nothing charged. */
	ALLOC_FAILS(NULL, over, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, E_OUTOFMEMORY);
	ALLOC_FAILS(NULL, over, MEM_COMMIT, PAGE_READWRITE, E_OUTOFMEMORY);
	mb_session_status st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.total_committed, st0.total_committed);
	assert_u64(st1.reservations, st0.reservations);
	assert_u64(st1.reserved, st0.reserved);

	/* Commit in a reservation over the ceiling: refused, the region stays reserved. */
	uint8_t *base = reserve(NULL, over + MiB);
	ALLOC_FAILS(base, over, MEM_COMMIT, PAGE_READWRITE, E_OUTOFMEMORY);
	CHECK_QUERY(base, base, base, PAGE_NOACCESS, over + MiB, MEM_RESERVE, ANY);
	st1 = status();
	assert_u64(st1.committed, st0.committed);
	assert_u64(st1.total_committed, st0.total_committed);

	/* Up to 1 MiB below the ceiling is granted; 2 MiB more is refused and charges nothing. */
	size_t granted = room - MiB;
	alloc_ok(base, granted, MEM_COMMIT, PAGE_READWRITE);
	st1 = status();
	assert_u64(st1.committed, st0.committed + granted);
	assert_u64(st1.total_committed, st0.total_committed + granted);
	ALLOC_FAILS(base + granted, 2 * MiB, MEM_COMMIT, PAGE_READWRITE, E_OUTOFMEMORY);
	ALLOC_FAILS(NULL, 2 * MiB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE, E_OUTOFMEMORY);
	mb_session_status st2 = status();
	assert_u64(st2.committed, st1.committed);
	assert_u64(st2.total_committed, st1.total_committed);
	assert_u64(st2.reservations, st1.reservations);
	CHECK_QUERY(base + granted, base + granted, base, PAGE_NOACCESS, over + MiB - granted,
		    MEM_RESERVE, ANY);

	/* GetMemoryLoad agrees: about 1 MiB left at eTaskCritical, load about 88%. */
	DWORD load = 0;
	SIZE_T avail = 0;
	assert_hr(mb_get_memory_load(g_c, &load, &avail), S_OK);
	if (avail + 64 * KiB < MiB || avail > MiB + 64 * KiB)
		fail_msg("available_bytes %zu, expected about %zu (1 MiB below the 90%% ceiling)",
			 (size_t)avail, MiB);
	uint64_t pct = st2.total_committed * 100 / st2.budget;
	if (load + 1 < pct || load > pct + 1)
		fail_msg("memory_load %u, expected %" PRIu64 " (+-1)", (unsigned)load, pct);

	/* The granted memory is usable; releasing it returns the budget. */
	base[0] = 1;
	base[granted - 1] = 1;
	release(base);
	st2 = status();
	assert_u64(st2.committed, st0.committed);
	assert_u64(st2.total_committed, st0.total_committed);
	uint8_t *again = alloc_ok(NULL, granted, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE);
	release(again);
}

/* ---- the ledger under a random workload ---- */

typedef struct model_region {
	uint8_t *base;
	size_t pages;
	uint8_t *committed; /* per page */
} model_region;

static uint64_t g_rng;

static uint64_t rnd(void)
{
	/* xorshift64* */
	g_rng ^= g_rng >> 12;
	g_rng ^= g_rng << 25;
	g_rng ^= g_rng >> 27;
	return g_rng * 2685821657736338717ull;
}

static size_t rnd_below(size_t n)
{
	return (size_t)(rnd() % n);
}

static size_t model_committed(const model_region *r, size_t n)
{
	size_t sum = 0;
	for (size_t i = 0; i < n; i++)
		for (size_t p = 0; p < r[i].pages; p++)
			sum += r[i].committed[p] ? PAGE : 0;
	return sum;
}

static void test_ledger_random_workload(void **state)
{
	(void)state;
	enum { MAX_REGIONS = 24, OPS = 2000, MAX_PAGES = 96 };
	static const DWORD prot[] = {PAGE_READWRITE, PAGE_READONLY, PAGE_NOACCESS,
				     PAGE_EXECUTE_READ, PAGE_READWRITE | PAGE_NOCACHE};
	model_region r[MAX_REGIONS];
	size_t n = 0;
	const uint64_t seed = 0x6d656d62726f6b72ull;
	g_rng = seed;
	mb_session_status st0 = status();

	for (int op = 0; op < OPS; op++) {
		size_t kind = rnd_below(100);
		if (n == 0 || (kind < 12 && n < MAX_REGIONS)) {
			size_t pages = 1 + rnd_below(MAX_PAGES);
			bool commit = rnd_below(3) == 0;
			DWORD type = commit ? MEM_RESERVE | MEM_COMMIT : MEM_RESERVE;
			uint8_t *base = alloc_ok(NULL, pages * PAGE - rnd_below(PAGE), type,
						 prot[rnd_below(5)]);
			r[n].base = base;
			r[n].pages = pages;
			r[n].committed = calloc(pages, 1);
			assert_non_null(r[n].committed);
			memset(r[n].committed, commit ? 1 : 0, pages);
			n++;
			continue;
		}
		model_region *g = &r[rnd_below(n)];
		size_t first = rnd_below(g->pages);
		size_t count = 1 + rnd_below(g->pages - first);
		uint8_t *addr = g->base + first * PAGE + rnd_below(PAGE);
		size_t size = (count - 1) * PAGE + 1; /* touches exactly `count` pages from addr */
		if (kind < 20) {
			release(g->base);
			free(g->committed);
			*g = r[--n];
		} else if (kind < 50) {
			void *mem = NULL;
			assert_hr(mb_virtual_alloc(g_c, addr, size, MEM_COMMIT, prot[rnd_below(5)],
						   eTaskCritical, &mem),
				  S_OK);
			assert_ptr(mem, g->base + first * PAGE);
			memset(g->committed + first, 1, count);
		} else if (kind < 55) {
			/* A commit running one page past the region's end. */
			ALLOC_FAILS(g->base + first * PAGE, (g->pages - first + 1) * PAGE,
				    MEM_COMMIT, PAGE_READWRITE, MB_E_INVALID_ADDRESS);
		} else if (kind < 75) {
			assert_hr(mb_virtual_free(g_c, addr, size, MEM_DECOMMIT), S_OK);
			memset(g->committed + first, 0, count);
		} else if (kind < 80) {
			assert_hr(mb_virtual_free(g_c, g->base, 0, MEM_DECOMMIT), S_OK);
			memset(g->committed, 0, g->pages);
		} else if (kind < 95) {
			bool all = true;
			for (size_t p = first; p < first + count; p++)
				all = all && g->committed[p];
			DWORD old = 0;
			assert_hr(mb_virtual_protect(g_c, addr, size, prot[rnd_below(5)], &old),
				  all ? S_OK : MB_E_INVALID_ADDRESS);
		} else {
			/* Any mix of committed and reserved pages: only committed ones reset. */
			void *mem = NULL;
			assert_hr(mb_virtual_alloc(g_c, addr, size, MEM_RESET, PAGE_READWRITE,
						   eTaskCritical, &mem),
				  S_OK);
		}
		if (op % 200 == 199) {
			mb_session_status st = status();
			size_t want = model_committed(r, n);
			if (st.committed != st0.committed + want)
				fail_msg("after op %d (seed 0x%" PRIx64 "): broker says committed "
					 "%" PRIu64 ", model %zu",
					 op, seed, st.committed - st0.committed, want);
			assert_u64(st.reservations, st0.reservations + n);
		}
	}

	/* Sum the committed bytes as VirtualQuery reports them, checking each page's state. */
	size_t from_query = 0, reserved = 0;
	for (size_t i = 0; i < n; i++) {
		uint8_t *p = r[i].base;
		uint8_t *end = r[i].base + r[i].pages * PAGE;
		while (p < end) {
			MEMORY_BASIC_INFORMATION m = query(p);
			assert_ptr(m.BaseAddress, p);
			assert_ptr(m.AllocationBase, r[i].base);
			assert_u64(m.Type, MEM_PRIVATE);
			assert_true(m.RegionSize >= PAGE && p + m.RegionSize <= end);
			assert_true(m.State == MEM_COMMIT || m.State == MEM_RESERVE);
			for (size_t k = 0; k < m.RegionSize / PAGE; k++) {
				size_t page = (size_t)(p - r[i].base) / PAGE + k;
				if (r[i].committed[page] != (m.State == MEM_COMMIT))
					fail_msg("region %p page %zu: VirtualQuery state 0x%x, "
						 "model %s",
						 (void *)r[i].base, page, (unsigned)m.State,
						 r[i].committed[page] ? "committed" : "reserved");
			}
			if (m.State == MEM_COMMIT)
				from_query += m.RegionSize;
			p += m.RegionSize;
		}
		reserved += r[i].pages * PAGE;
	}
	mb_session_status st = status();
	assert_u64(from_query, model_committed(r, n));
	assert_u64(st.committed - st0.committed, from_query);
	assert_u64(st.total_committed - st0.total_committed, from_query);
	assert_u64(st.committed, st.total_committed); /* single client */
	assert_u64(st.reservations - st0.reservations, n);
	assert_u64(st.reserved - st0.reserved, reserved);
	assert_true(st.section_allocated <= st.committed);

	for (size_t i = 0; i < n; i++) {
		release(r[i].base);
		free(r[i].committed);
	}
	st = status();
	assert_u64(st.committed, st0.committed);
	assert_u64(st.total_committed, st0.total_committed);
	assert_u64(st.reservations, st0.reservations);
	assert_u64(st.reserved, st0.reserved);
	if (st0.committed == 0)
		assert_u64(st.section_allocated, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reserve_null_rounds_size_up_to_page),
	    cmocka_unit_test(test_reserve_at_address_rounds_down_to_64k),
	    cmocka_unit_test(test_reserve_top_down_is_a_hint),
	    cmocka_unit_test(test_reserve_over_reserved_range_fails),
	    cmocka_unit_test(test_reserve_over_foreign_mapping_fails),
	    cmocka_unit_test(test_commit_rounds_to_pages_touching_range),
	    cmocka_unit_test(test_commit_without_reserve_fails),
	    cmocka_unit_test(test_commit_past_region_end_fails_and_commits_nothing),
	    cmocka_unit_test(test_commit_null_address_reserves_and_commits),
	    cmocka_unit_test(test_recommit_succeeds_and_is_not_charged_twice),
	    cmocka_unit_test(test_fresh_commit_reads_zero),
	    cmocka_unit_test(test_data_survives_recommit),
	    cmocka_unit_test(test_decommit_then_commit_reads_zero),
	    cmocka_unit_test(test_decommit_uncommitted_pages_succeeds),
	    cmocka_unit_test(test_decommit_size0_at_base_is_whole_region),
	    cmocka_unit_test(test_decommit_size0_not_at_base_fails),
	    cmocka_unit_test(test_decommit_past_reservation_end_is_invalidarg),
	    cmocka_unit_test(test_release_with_size_is_invalidarg),
	    cmocka_unit_test(test_release_not_at_base_is_invalid_address),
	    cmocka_unit_test(test_free_type_must_be_decommit_or_release),
	    cmocka_unit_test(test_free_of_memory_not_allocated_here),
	    cmocka_unit_test(test_release_frees_everything),
	    cmocka_unit_test(test_alloc_valid_protections),
	    cmocka_unit_test(test_alloc_invalid_protections),
	    cmocka_unit_test(test_alloc_invalid_types),
	    cmocka_unit_test(test_reset_must_stand_alone),
	    cmocka_unit_test(test_reset_with_invalid_protect),
	    cmocka_unit_test(test_reset_then_reset_undo),
	    cmocka_unit_test(test_reset_of_reserved_pages_changes_nothing),
	    cmocka_unit_test(test_alloc_size_zero),
	    cmocka_unit_test(test_alloc_level_out_of_range),
	    cmocka_unit_test(test_alloc_null_out_pointer),
	    cmocka_unit_test(test_query_short_buffer),
	    cmocka_unit_test(test_query_null_pointers),
	    cmocka_unit_test(test_query_runs_split_and_never_cross_reservations),
	    cmocka_unit_test(test_query_free_range_reaches_next_reservation),
	    cmocka_unit_test(test_query_unaligned_address_rounds_down),
	    cmocka_unit_test(test_query_address_limit),
	    cmocka_unit_test(test_protect_returns_first_page_old_protection),
	    cmocka_unit_test(test_protect_affects_all_pages_touching_range),
	    cmocka_unit_test(test_protect_fails_on_uncommitted_pages_and_changes_nothing),
	    cmocka_unit_test(test_protect_fails_across_adjacent_reservations),
	    cmocka_unit_test(test_protect_argument_errors),
	    cmocka_unit_test(test_memory_load_sane),
	    cmocka_unit_test(test_budget_task_critical_refused_above_90_percent),
	    cmocka_unit_test(test_ledger_random_workload),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
