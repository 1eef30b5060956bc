/*
 * test_com.c: the COM face of libmembroker: IHostMemoryManager, the broker-backed IHostMalloc heap
 * (client/heap.c) and ICLRMemoryNotificationCallback delivery, against a real broker.
 *
 * One broker with a large budget (1 GiB) serves the layout, reference-counting and heap tests; the
 * tests about levels and notifications start their own broker with a small budget. No test asserts
 * a timing: waits are for events, with generous limits.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define COBJMACROS
#include "harness.h"
#include "membroker.h"
#include "../client/heap.h" /* internal: mb_heap_leak_report, mb_heap_trim */

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

static mb_test_broker g_broker;

/* ---- assertion helpers ---- */

static mb_client *connect_to(const mb_test_broker *b)
{
	mb_client *c = NULL;
	assert_hr(mb_connect(b->address, &c), S_OK);
	assert_non_null(c);
	return c;
}

static mb_session_status status_of(mb_client *c)
{
	mb_session_status st;
	memset(&st, 0, sizeof(st));
	assert_hr(mb_get_session_status(c, &st), S_OK);
	return st;
}

static IHostMemoryManager *manager_of(mb_client *c)
{
	IHostMemoryManager *m = NULL;
	assert_hr(mb_host_memory_manager(c, &m), S_OK);
	assert_non_null(m);
	return m;
}

static IHostMalloc *heap_of(IHostMemoryManager *m, DWORD type)
{
	IHostMalloc *h = NULL;
	assert_hr(IHostMemoryManager_CreateMalloc(m, type, &h), S_OK);
	assert_non_null(h);
	return h;
}

static int group_setup(void **state)
{
	(void)state;
	return mb_test_broker_start(&g_broker, (const char *[]){"--budget", "1G", NULL});
}

static int group_teardown(void **state)
{
	(void)state;
	return mb_test_broker_stop(&g_broker) == 0 ? 0 : -1;
}

/* ---- vtable layout ---- */

#define SLOT(type, member, n) assert_int_equal(offsetof(type, member), (n) * sizeof(void *))

static void test_vtable_layout(void **state)
{
	(void)state;
	SLOT(IHostMemoryManagerVtbl, QueryInterface, 0);
	SLOT(IHostMemoryManagerVtbl, AddRef, 1);
	SLOT(IHostMemoryManagerVtbl, Release, 2);
	SLOT(IHostMemoryManagerVtbl, CreateMalloc, 3);
	SLOT(IHostMemoryManagerVtbl, VirtualAlloc, 4);
	SLOT(IHostMemoryManagerVtbl, VirtualFree, 5);
	SLOT(IHostMemoryManagerVtbl, VirtualQuery, 6);
	SLOT(IHostMemoryManagerVtbl, VirtualProtect, 7);
	SLOT(IHostMemoryManagerVtbl, GetMemoryLoad, 8);
	SLOT(IHostMemoryManagerVtbl, RegisterMemoryNotificationCallback, 9);
	SLOT(IHostMemoryManagerVtbl, NeedsVirtualAddressSpace, 10);
	SLOT(IHostMemoryManagerVtbl, AcquiredVirtualAddressSpace, 11);
	SLOT(IHostMemoryManagerVtbl, ReleasedVirtualAddressSpace, 12);
	assert_int_equal(sizeof(IHostMemoryManagerVtbl), 13 * sizeof(void *));

	SLOT(IHostMallocVtbl, QueryInterface, 0);
	SLOT(IHostMallocVtbl, AddRef, 1);
	SLOT(IHostMallocVtbl, Release, 2);
	SLOT(IHostMallocVtbl, Alloc, 3);
	SLOT(IHostMallocVtbl, DebugAlloc, 4);
	SLOT(IHostMallocVtbl, Free, 5);
	assert_int_equal(sizeof(IHostMallocVtbl), 6 * sizeof(void *));

	SLOT(ICLRMemoryNotificationCallbackVtbl, QueryInterface, 0);
	SLOT(ICLRMemoryNotificationCallbackVtbl, AddRef, 1);
	SLOT(ICLRMemoryNotificationCallbackVtbl, Release, 2);
	SLOT(ICLRMemoryNotificationCallbackVtbl, OnMemoryNotification, 3);
	assert_int_equal(sizeof(ICLRMemoryNotificationCallbackVtbl), 4 * sizeof(void *));

	/* The object is its vtable pointer (what the CLR dereferences). */
	assert_int_equal(offsetof(IHostMemoryManager, lpVtbl), 0);
	assert_int_equal(offsetof(IHostMalloc, lpVtbl), 0);
	assert_int_equal(offsetof(ICLRMemoryNotificationCallback, lpVtbl), 0);
	assert_int_equal(sizeof(IID), 16);
	assert_int_equal(mb_iid_ihostmalloc.Data1, 0x1831991Cu);
	assert_int_equal(mb_iid_ihostmemorymanager.Data1, 0x7BC698D1u);
	assert_int_equal(mb_iid_iclrmemorynotificationcallback.Data1, 0x47EB8E57u);
}

/* ---- QueryInterface and reference counting ---- */

static const IID random_iid = {0x12345678, 0x9ABC, 0xDEF0, {1, 2, 3, 4, 5, 6, 7, 8}};

static void test_manager_query_interface_and_refs(void **state)
{
	(void)state;
	mb_client *c = connect_to(&g_broker);
	IHostMemoryManager *m = manager_of(c);
	void *p = (void *)0x1;

	assert_hr(IHostMemoryManager_QueryInterface(m, &mb_iid_iunknown, &p), S_OK);
	assert_ptr_equal(p, m);
	assert_hr(IHostMemoryManager_QueryInterface(m, &mb_iid_ihostmemorymanager, &p), S_OK);
	assert_ptr_equal(p, m);
	/* Each successful QueryInterface added a reference: 1 + 2. */
	assert_int_equal(IHostMemoryManager_AddRef(m), 4);
	assert_int_equal(IHostMemoryManager_Release(m), 3);
	assert_int_equal(IHostMemoryManager_Release(m), 2);
	assert_int_equal(IHostMemoryManager_Release(m), 1);

	p = (void *)0x1;
	assert_hr(IHostMemoryManager_QueryInterface(m, &random_iid, &p), E_NOINTERFACE);
	assert_null(p);
	p = (void *)0x1;
	assert_hr(IHostMemoryManager_QueryInterface(m, &mb_iid_ihostmalloc, &p), E_NOINTERFACE);
	assert_null(p);
	assert_hr(IHostMemoryManager_QueryInterface(m, &mb_iid_iunknown, NULL), E_POINTER);
	assert_int_equal(IHostMemoryManager_AddRef(m), 2);
	assert_int_equal(IHostMemoryManager_Release(m), 1);
	assert_int_equal(IHostMemoryManager_Release(m), 0);
	mb_disconnect(c);
}

static bool sessions_back_to(void *arg)
{
	void **a = arg;
	mb_session_status st;
	if (mb_get_session_status(a[0], &st) != S_OK)
		return false;
	return st.sessions == *(uint32_t *)a[1];
}

static void test_disconnect_while_manager_alive(void **state)
{
	(void)state;
	mb_client *observer = connect_to(&g_broker);
	uint32_t baseline = 1;
	void *settle[2] = {observer, &baseline};
	/* The previous test's client may still be ending: a disconnect completes asynchronously
	 * in the broker. Every test disconnects its clients, so only the observer remains. */
	assert_true(mb_test_wait_for(sessions_back_to, settle, 20000));
	mb_client *c = connect_to(&g_broker);
	IHostMemoryManager *m = manager_of(c);
	IHostMalloc *h;
	void *mem = NULL, *blk = NULL;

	assert_int_equal(status_of(observer).sessions, baseline + 1);
	mb_disconnect(c); /* deferred: the manager holds the client */

	assert_hr(IHostMemoryManager_VirtualAlloc(m, NULL, 64 * KiB, MEM_RESERVE | MEM_COMMIT,
						  PAGE_READWRITE, eTaskCritical, &mem),
		  S_OK);
	memset(mem, 0x5A, 64 * KiB);
	h = heap_of(m, MALLOC_THREADSAFE);
	assert_hr(IHostMalloc_Alloc(h, 100, eTaskCritical, &blk), S_OK);
	memset(blk, 0x33, 100);
	assert_hr(IHostMemoryManager_VirtualFree(m, mem, 0, MEM_RELEASE), S_OK);
	assert_int_equal(IHostMemoryManager_Release(m), 0);

	/* The heap holds the client too: still usable after the manager is gone. */
	assert_hr(IHostMalloc_Free(h, blk), S_OK);
	assert_hr(IHostMalloc_Alloc(h, 5000, eTaskCritical, &blk), S_OK);
	memset(blk, 0x44, 5000);
	assert_int_equal(status_of(observer).sessions, baseline + 1);
	assert_int_equal(IHostMalloc_Release(h), 0); /* the last reference: the session ends */
	void *args[2] = {observer, &baseline};
	assert_true(mb_test_wait_for(sessions_back_to, args, 20000));
	mb_disconnect(observer);
}

static void test_create_malloc_arguments_and_heap_identity(void **state)
{
	(void)state;
	mb_client *c = connect_to(&g_broker);
	IHostMemoryManager *m = manager_of(c);
	IHostMalloc *h = (IHostMalloc *)0x1;
	void *p = (void *)0x1;

	assert_hr(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE, NULL), E_POINTER);
	assert_hr(IHostMemoryManager_CreateMalloc(m, 0x4, &h), E_INVALIDARG);
	assert_null(h);
	h = (IHostMalloc *)0x1;
	assert_hr(IHostMemoryManager_CreateMalloc(m, MALLOC_THREADSAFE | 0x80000000u, &h),
		  E_INVALIDARG);
	assert_null(h);

	h = heap_of(m, MALLOC_THREADSAFE);
	assert_hr(IHostMalloc_QueryInterface(h, &mb_iid_iunknown, &p), S_OK);
	assert_ptr_equal(p, h);
	assert_hr(IHostMalloc_QueryInterface(h, &mb_iid_ihostmalloc, &p), S_OK);
	assert_ptr_equal(p, h);
	p = (void *)0x1;
	assert_hr(IHostMalloc_QueryInterface(h, &mb_iid_ihostmemorymanager, &p), E_NOINTERFACE);
	assert_null(p);
	p = (void *)0x1;
	assert_hr(IHostMalloc_QueryInterface(h, &random_iid, &p), E_NOINTERFACE);
	assert_null(p);
	assert_int_equal(IHostMalloc_AddRef(h), 4);
	assert_int_equal(IHostMalloc_Release(h), 3);
	assert_int_equal(IHostMalloc_Release(h), 2);
	assert_int_equal(IHostMalloc_Release(h), 1);
	assert_int_equal(IHostMalloc_Release(h), 0);

	/* Every combination of the two flags is accepted. */
	for (DWORD t = 0; t <= 3; t++) {
		h = heap_of(m, t);
		assert_hr(IHostMalloc_Alloc(h, 24, eTaskCritical, &p), S_OK);
		assert_hr(IHostMalloc_Free(h, p), S_OK);
		assert_int_equal(IHostMalloc_Release(h), 0);
	}
	assert_int_equal(IHostMemoryManager_Release(m), 0);
	mb_disconnect(c);
}

/* ---- the heap ---- */

static void test_heap_basic_sizes_and_accounting(void **state)
{
	(void)state;
	static const size_t sizes[] = {0,     1,     15,     16,      17,	  100,	 128,
				       129,   1000,  4096,   4097,    32767,	  32768, 32769,
				       65536, 65537, 100000, 1 * MiB, 3 * MiB + 5};
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	mb_client *c = connect_to(&g_broker);
	IHostMemoryManager *m = manager_of(c);
	IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
	void *p[N];

	assert_int_equal(status_of(c).committed, 0);
	for (size_t i = 0; i < N; i++) {
		p[i] = (void *)0x1;
		assert_hr(IHostMalloc_Alloc(h, sizes[i], (EMemoryCriticalLevel)(i % 3), &p[i]),
			  S_OK);
		assert_non_null(p[i]);
		assert_int_equal((uintptr_t)p[i] % 16, 0);
		memset(p[i], (int)i + 1, sizes[i]);
		for (size_t j = 0; j < i; j++)
			assert_ptr_not_equal(p[i], p[j]);
	}
	mb_session_status st = status_of(c);
	assert_true(st.committed >= 1 * MiB + 3 * MiB + 100000);
	mb_heap_stats hs;
	mb_heap_get_stats(h, &hs);
	assert_int_equal(hs.live_blocks, N);
	assert_int_equal(hs.committed, st.committed);
	for (size_t i = 0; i < N; i++) {
		const unsigned char *b = p[i];
		for (size_t k = 0; k < sizes[i]; k++)
			if (b[k] != (unsigned char)(i + 1))
				fail_msg("block %zu byte %zu overwritten", i, k);
		assert_hr(IHostMalloc_Free(h, p[i]), S_OK);
	}
	assert_hr(IHostMalloc_Free(h, NULL), S_OK);

	/* Argument errors leave *ppMem NULL. */
	void *q = (void *)0x1;
	assert_hr(IHostMalloc_Alloc(h, 10, (EMemoryCriticalLevel)3, &q), E_INVALIDARG);
	assert_null(q);
	q = (void *)0x1;
	assert_hr(IHostMalloc_Alloc(h, (SIZE_T)-1, eTaskCritical, &q), E_OUTOFMEMORY);
	assert_null(q);
	assert_hr(IHostMalloc_Alloc(h, 10, eTaskCritical, NULL), E_POINTER);

	/* Cached empty spans may stay committed until trim or the last Release. */
	mb_heap_trim(h);
	assert_int_equal(status_of(c).committed, 0);
	assert_hr(IHostMalloc_Alloc(h, 50, eAppDomainCritical, &q), S_OK);
	assert_int_equal(status_of(c).committed, MB_HEAP_SPAN);
	assert_int_equal(IHostMalloc_Release(h), 0); /* returns every span, live or not */
	assert_int_equal(status_of(c).committed, 0);
	assert_int_equal(status_of(c).reservations, 0);
	assert_int_equal(IHostMemoryManager_Release(m), 0);
	mb_disconnect(c);
}

static void test_heap_free_of_foreign_pointers(void **state)
{
	(void)state;
	mb_client *c = connect_to(&g_broker);
	IHostMemoryManager *m = manager_of(c);
	IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
	IHostMalloc *other = heap_of(m, MALLOC_THREADSAFE);
	void *small, *large, *theirs, *keep, *va;
	int on_stack = 0;
	void *from_malloc = malloc(64);

	assert_hr(IHostMalloc_Alloc(h, 48, eTaskCritical, &small), S_OK);
	assert_hr(IHostMalloc_Alloc(h, 48, eTaskCritical, &keep), S_OK);
	assert_hr(IHostMalloc_Alloc(h, 200 * KiB, eTaskCritical, &large), S_OK);
	assert_hr(IHostMalloc_Alloc(other, 48, eTaskCritical, &theirs), S_OK);
	assert_hr(IHostMemoryManager_VirtualAlloc(m, NULL, 64 * KiB, MEM_RESERVE | MEM_COMMIT,
						  PAGE_READWRITE, eTaskCritical, &va),
		  S_OK);

	assert_hr(IHostMalloc_Free(h, &on_stack), HOST_E_INVALIDOPERATION);
	assert_hr(IHostMalloc_Free(h, from_malloc), HOST_E_INVALIDOPERATION);
	assert_hr(IHostMalloc_Free(h, theirs), HOST_E_INVALIDOPERATION);
	assert_hr(IHostMalloc_Free(h, va), HOST_E_INVALIDOPERATION);
	assert_hr(IHostMalloc_Free(h, (char *)small + 1), HOST_E_INVALIDOPERATION);
	assert_hr(IHostMalloc_Free(h, (char *)small + 16), HOST_E_INVALIDOPERATION);
	assert_hr(IHostMalloc_Free(h, (char *)large + 16), HOST_E_INVALIDOPERATION);
	assert_hr(IHostMalloc_Free(h, (char *)large + 64 * KiB), HOST_E_INVALIDOPERATION);
	/* The tail of a 48-byte span past its last block (65536 = 1365 * 48 + 16). */
	uintptr_t span = (uintptr_t)small & ~(uintptr_t)(MB_HEAP_SPAN - 1);
	assert_hr(IHostMalloc_Free(h, (void *)(span + 1365 * 48)), HOST_E_INVALIDOPERATION);
	/* A block never handed out (the next block after the two allocated). */
	assert_hr(IHostMalloc_Free(h, (void *)(span + 1364 * 48)), HOST_E_INVALIDOPERATION);

	assert_hr(IHostMalloc_Free(h, small), S_OK);
	assert_hr(IHostMalloc_Free(h, small), HOST_E_INVALIDOPERATION);
	assert_hr(IHostMalloc_Free(h, large), S_OK);
	assert_hr(IHostMalloc_Free(h, large), HOST_E_INVALIDOPERATION);
	/* The other heap's block is intact and frees there. */
	assert_hr(IHostMalloc_Free(other, theirs), S_OK);
	assert_hr(IHostMalloc_Free(other, theirs), HOST_E_INVALIDOPERATION);
	assert_hr(IHostMalloc_Free(h, keep), S_OK);
	assert_int_equal(mb_heap_leak_report(h, NULL), 0);

	assert_hr(IHostMemoryManager_VirtualFree(m, va, 0, MEM_RELEASE), S_OK);
	free(from_malloc);
	assert_int_equal(IHostMalloc_Release(other), 0);
	assert_int_equal(IHostMalloc_Release(h), 0);
	assert_int_equal(status_of(c).committed, 0);
	assert_int_equal(IHostMemoryManager_Release(m), 0);
	mb_disconnect(c);
}

static void test_heap_debug_alloc_leak_report(void **state)
{
	(void)state;
	mb_client *c = connect_to(&g_broker);
	IHostMemoryManager *m = manager_of(c);
	IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
	void *a, *b, *g, *plain;
	char *text = NULL;
	size_t len = 0;

	assert_hr(IHostMalloc_DebugAlloc(h, 40, eTaskCritical, "alpha.c", 11, &a), S_OK);
	assert_hr(IHostMalloc_DebugAlloc(h, 300 * KiB, eProcessCritical, "beta.c", 22, &b), S_OK);
	assert_hr(IHostMalloc_DebugAlloc(h, 40, eTaskCritical, "gamma.c", 33, &g), S_OK);
	assert_hr(IHostMalloc_Alloc(h, 1000, eAppDomainCritical, &plain), S_OK);
	assert_hr(IHostMalloc_Free(h, g), S_OK);

	FILE *f = open_memstream(&text, &len);
	assert_non_null(f);
	assert_int_equal(mb_heap_leak_report(h, f), 3);
	fclose(f);
	assert_non_null(strstr(text, "alpha.c:11"));
	assert_non_null(strstr(text, "beta.c:22"));
	assert_non_null(strstr(text, "eProcessCritical"));
	assert_null(strstr(text, "gamma.c"));
	assert_non_null(strstr(text, "3 block(s) still allocated"));
	free(text);

	/* A block reusing a freed DebugAlloc block's address does not inherit its record. */
	void *again;
	assert_hr(IHostMalloc_Alloc(h, 40, eTaskCritical, &again), S_OK);
	text = NULL;
	f = open_memstream(&text, &len);
	assert_int_equal(mb_heap_leak_report(h, f), 4);
	fclose(f);
	assert_null(strstr(text, "gamma.c"));
	free(text);

	assert_hr(IHostMalloc_Free(h, again), S_OK);
	assert_hr(IHostMalloc_Free(h, a), S_OK);
	assert_hr(IHostMalloc_Free(h, b), S_OK);
	assert_hr(IHostMalloc_Free(h, plain), S_OK);
	assert_int_equal(mb_heap_leak_report(h, NULL), 0);
	assert_int_equal(IHostMalloc_Release(h), 0);
	assert_int_equal(IHostMemoryManager_Release(m), 0);
	mb_disconnect(c);
}

static void test_heap_executable(void **state)
{
	(void)state;
	mb_client *c = connect_to(&g_broker);
	IHostMemoryManager *m = manager_of(c);
	IHostMalloc *x = heap_of(m, MALLOC_EXECUTABLE);
	IHostMalloc *rw = heap_of(m, 0);
	MEMORY_BASIC_INFORMATION mbi;
	SIZE_T n;
	void *p, *q;

	assert_hr(IHostMalloc_Alloc(x, 64, eTaskCritical, &p), S_OK);
	assert_hr(IHostMemoryManager_VirtualQuery(m, p, &mbi, sizeof(mbi), &n), S_OK);
	assert_int_equal(mbi.State, MEM_COMMIT);
	assert_int_equal(mbi.Protect, PAGE_EXECUTE_READWRITE);
	assert_hr(IHostMalloc_Alloc(rw, 64, eTaskCritical, &q), S_OK);
	assert_hr(IHostMemoryManager_VirtualQuery(m, q, &mbi, sizeof(mbi), &n), S_OK);
	assert_int_equal(mbi.Protect, PAGE_READWRITE);
#if defined(__x86_64__)
	/* mov eax, 42; ret */
	static const unsigned char code[] = {0xB8, 42, 0, 0, 0, 0xC3};
	int (*fn)(void);
	memcpy(p, code, sizeof(code));
	memcpy(&fn, &p, sizeof(fn));
	assert_int_equal(fn(), 42);
#endif
	assert_hr(IHostMalloc_Free(x, p), S_OK);
	assert_hr(IHostMalloc_Free(rw, q), S_OK);
	assert_int_equal(IHostMalloc_Release(x), 0);
	assert_int_equal(IHostMalloc_Release(rw), 0);
	assert_int_equal(IHostMemoryManager_Release(m), 0);
	mb_disconnect(c);
}

/* ---- multi-threaded stress ---- */

/* Under AddressSanitizer every access and every block costs several times more: fewer
 * operations keep the test well inside its time on a loaded machine, with the same coverage of
 * the paths (the sizes and the sharing of blocks between threads do not change). */
#if defined(__SANITIZE_ADDRESS__)
#define STRESS_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define STRESS_SANITIZED 1
#endif
#endif
#ifndef STRESS_SANITIZED
#define STRESS_SANITIZED 0
#endif

#define STRESS_THREADS 8
#define STRESS_OPS     (STRESS_SANITIZED ? 2500 : 10000)
#define STRESS_SLOTS   256 /* shared between threads, so blocks are freed by other threads */
/* Blocks up to this size are filled whole; larger ones (runs of 64 KiB granules) in pieces of
 * STRESS_PIECE bytes at the start of every granule and at their end, which still catches any
 * overlap of two blocks (they would share a granule) without touching every page. */
#define STRESS_FULL  ((size_t)65536)
#define STRESS_PIECE ((size_t)64)

typedef struct blk {
	unsigned char *p;
	size_t size;
	unsigned char tag;
} blk;

typedef struct stress {
	IHostMalloc *heap;
	_Atomic(blk *) slots[STRESS_SLOTS];
	atomic_ulong allocs, frees, refused, errors;
} stress;

static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* 1 B .. 4 MiB, log-uniform. */
static size_t stress_size(uint64_t *rng)
{
	unsigned e = (unsigned)(next_rand(rng) % 22); /* 2^0 .. 2^21 */
	size_t lo = (size_t)1 << e;
	return lo + (size_t)(next_rand(rng) % lo) + 1; /* (2^e, 2^(e+1)], at most 4 MiB */
}

/* Calls fn on each stretch [off, off + len) of b that fill writes. */
static bool each_piece(const blk *b, bool (*fn)(const blk *b, size_t off, size_t len))
{
	if (b->size <= STRESS_FULL)
		return fn(b, 0, b->size);
	for (size_t off = 0; off < b->size; off += STRESS_FULL)
		if (!fn(b, off, STRESS_PIECE))
			return false;
	return fn(b, b->size - STRESS_PIECE, STRESS_PIECE);
}

static bool fill_piece(const blk *b, size_t off, size_t len)
{
	memset(b->p + off, b->tag, len);
	return true;
}

/* Bytes at the start of a block holding its address and size, when it has room for them. */
static size_t stamp_len(const blk *b)
{
	return b->size >= 2 * sizeof(uintptr_t) ? 2 * sizeof(uintptr_t) : 0;
}

static bool piece_intact(const blk *b, size_t off, size_t len)
{
	size_t from = off > stamp_len(b) ? off : stamp_len(b);

	if (from >= off + len)
		return true;
	/* Every byte equals the tag: the first one, then an overlapping memcmp. */
	return b->p[from] == b->tag &&
	       memcmp(b->p + from, b->p + from + 1, off + len - from - 1) == 0;
}

/* The tag over the block (or its pieces), then the block's address and size in its first
 * bytes, so a block handed out twice or overlapping another is seen at its next check. */
static void fill(blk *b)
{
	each_piece(b, fill_piece);
	if (stamp_len(b) != 0) {
		uintptr_t stamp[2] = {(uintptr_t)b->p, b->size};
		memcpy(b->p, stamp, sizeof(stamp));
	}
}

static bool intact(const blk *b)
{
	if (stamp_len(b) != 0) {
		uintptr_t stamp[2];
		memcpy(stamp, b->p, sizeof(stamp));
		if (stamp[0] != (uintptr_t)b->p || stamp[1] != b->size)
			return false;
	}
	return each_piece(b, piece_intact);
}

static void stress_release(stress *st, blk *b)
{
	if (!intact(b)) {
		print_error("block %p of %zu bytes overwritten\n", (void *)b->p, b->size);
		atomic_fetch_add(&st->errors, 1);
	}
	HRESULT hr = IHostMalloc_Free(st->heap, b->p);
	if (hr != S_OK) {
		print_error("Free(%p) of %zu bytes: %s (%s)\n", (void *)b->p, b->size,
			    mb_hresult_name(hr), mb_last_error());
		atomic_fetch_add(&st->errors, 1);
	}
	atomic_fetch_add(&st->frees, 1);
	free(b);
}

typedef struct stress_arg {
	stress *st;
	uint64_t seed;
} stress_arg;

static void *stress_thread(void *arg)
{
	stress_arg *a = arg;
	stress *st = a->st;
	uint64_t rng = a->seed;

	for (int op = 0; op < STRESS_OPS; op++) {
		size_t i = (size_t)(next_rand(&rng) % STRESS_SLOTS);
		blk *b = atomic_exchange(&st->slots[i], NULL);
		if (b != NULL) {
			stress_release(st, b);
			continue;
		}
		b = malloc(sizeof(*b));
		if (b == NULL) {
			atomic_fetch_add(&st->errors, 1);
			break;
		}
		b->size = stress_size(&rng);
		b->tag = (unsigned char)(next_rand(&rng) % 255 + 1);
		void *p = NULL;
		HRESULT hr = IHostMalloc_Alloc(st->heap, b->size,
					       (EMemoryCriticalLevel)(next_rand(&rng) % 3), &p);
		if (hr != S_OK) {
			/* The budget is far above what 256 live blocks can need. */
			atomic_fetch_add(&st->refused, 1);
			free(b);
			continue;
		}
		atomic_fetch_add(&st->allocs, 1);
		b->p = p;
		fill(b);
		blk *expected = NULL;
		if (!atomic_compare_exchange_strong(&st->slots[i], &expected, b))
			stress_release(st, b);
	}
	return NULL;
}

static void test_heap_multithreaded_stress(void **state)
{
	(void)state;
	mb_client *c = connect_to(&g_broker);
	IHostMemoryManager *m = manager_of(c);
	stress *st = calloc(1, sizeof(*st));
	pthread_t t[STRESS_THREADS];
	stress_arg args[STRESS_THREADS];

	assert_non_null(st);
	st->heap = heap_of(m, MALLOC_THREADSAFE);
	for (int i = 0; i < STRESS_THREADS; i++) {
		args[i].st = st;
		args[i].seed = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1) ^ (uint64_t)time(NULL);
		assert_int_equal(pthread_create(&t[i], NULL, stress_thread, &args[i]), 0);
	}
	for (int i = 0; i < STRESS_THREADS; i++)
		pthread_join(t[i], NULL);
	for (size_t i = 0; i < STRESS_SLOTS; i++) {
		blk *b = atomic_exchange(&st->slots[i], NULL);
		if (b != NULL)
			stress_release(st, b);
	}
	print_message("stress: %lu allocations, %lu frees, %lu refused\n", atomic_load(&st->allocs),
		      atomic_load(&st->frees), atomic_load(&st->refused));
	assert_int_equal(atomic_load(&st->errors), 0);
	assert_int_equal(atomic_load(&st->refused), 0);
	assert_int_equal(atomic_load(&st->allocs), atomic_load(&st->frees));
	assert_true(atomic_load(&st->allocs) >= STRESS_THREADS * STRESS_OPS / 4);
	assert_int_equal(mb_heap_leak_report(st->heap, stderr), 0);
	assert_int_equal(IHostMalloc_Release(st->heap), 0);
	assert_int_equal(status_of(c).committed, 0);
	assert_int_equal(IHostMemoryManager_Release(m), 0);
	mb_disconnect(c);
	free(st);
}

/* Large blocks come back from the heap's pool without a broker call; the pool stays within its
 * bound, and trim gives everything back. */
static void test_heap_large_reuse_bounded_and_trim(void **state)
{
	(void)state;
	mb_client *c = connect_to(&g_broker);
	IHostMemoryManager *m = manager_of(c);
	IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
	mb_client_stats before, after;
	mb_heap_stats hs;
	void *p, *many[40];

	assert_hr(IHostMalloc_Alloc(h, 200 * KiB, eTaskCritical, &p), S_OK);
	assert_hr(IHostMalloc_Free(h, p), S_OK);
	assert_hr(mb_get_client_stats(c, &before), S_OK);
	for (int i = 0; i < 100; i++) {
		void *q;
		assert_hr(IHostMalloc_Alloc(h, 100 * KiB + (size_t)i * 1000, eTaskCritical, &q),
			  S_OK);
		memset(q, 0x5A, 100 * KiB);
		assert_hr(IHostMalloc_Free(h, q), S_OK);
	}
	assert_hr(mb_get_client_stats(c, &after), S_OK);
	/* Reused from the pool: no VirtualAlloc or VirtualFree at all, let alone a round trip. */
	assert_u64(after.alloc_calls - before.alloc_calls, 0);
	assert_u64(after.free_calls - before.free_calls, 0);

	/* 40 MiB of live 1 MiB blocks, then freed: the pool keeps at most its bound committed. */
	for (int i = 0; i < 40; i++) {
		assert_hr(IHostMalloc_Alloc(h, 1 * MiB, eTaskCritical, &many[i]), S_OK);
		memset(many[i], i, 1 * MiB);
	}
	mb_heap_get_stats(h, &hs);
	assert_true(hs.committed >= 40 * MiB);
	for (int i = 0; i < 40; i++)
		assert_hr(IHostMalloc_Free(h, many[i]), S_OK);
	mb_heap_get_stats(h, &hs);
	assert_int_equal(hs.live_blocks, 0);
	assert_true(hs.pool <= MB_HEAP_POOL_DEFAULT);
	assert_true(hs.committed <= MB_HEAP_POOL_DEFAULT + 16 * MB_HEAP_SPAN);
	assert_int_equal(hs.committed, status_of(c).committed); /* the broker's books agree */

	mb_heap_trim(h);
	mb_heap_get_stats(h, &hs);
	assert_int_equal(hs.pool, 0);
	assert_int_equal(hs.committed, 0);
	assert_int_equal(hs.segments, 0);
	assert_int_equal(status_of(c).committed, 0);
	assert_int_equal(IHostMalloc_Release(h), 0);
	assert_int_equal(IHostMemoryManager_Release(m), 0);
	mb_disconnect(c);
}

/* ---- threads: blocks freed by other threads, the pool's bound with several threads, trim ---- */

#define XT_THREADS 4
#define XT_SMALL   3000
#define XT_LARGE   40

typedef struct xt_shared {
	IHostMalloc *heap;
	unsigned char *small[XT_THREADS][XT_SMALL];
	unsigned char *large[XT_THREADS][XT_LARGE];
	size_t large_size[XT_THREADS][XT_LARGE];
	pthread_barrier_t phase;
	atomic_int errors;
} xt_shared;

typedef struct xt_arg {
	xt_shared *sh;
	int id;
} xt_arg;

static void xt_expect(xt_shared *sh, bool ok, const char *what, const void *p)
{
	if (!ok) {
		print_error("%s (%p): %s\n", what, p, mb_last_error());
		atomic_fetch_add(&sh->errors, 1);
	}
}

static void *xt_thread(void *arg)
{
	xt_arg *a = arg;
	xt_shared *sh = a->sh;
	int me = a->id, next = (a->id + 1) % XT_THREADS;
	unsigned char tag = (unsigned char)(0x40 + me);

	/* Each thread allocates its own blocks, small (16 B .. 1 KiB) and large (up to 1 MiB). */
	for (int i = 0; i < XT_SMALL; i++) {
		size_t n = 16 + (size_t)(i * 37) % 1000;
		void *p = NULL;
		HRESULT hr = IHostMalloc_Alloc(sh->heap, n, eTaskCritical, &p);
		xt_expect(sh, hr == S_OK, "small Alloc", p);
		sh->small[me][i] = p;
		if (p != NULL)
			memset(p, tag, n);
	}
	for (int i = 0; i < XT_LARGE; i++) {
		size_t n = 1 * MiB - (size_t)i * 8 * KiB;
		void *p = NULL;
		HRESULT hr = IHostMalloc_Alloc(sh->heap, n, eTaskCritical, &p);
		xt_expect(sh, hr == S_OK, "large Alloc", p);
		sh->large[me][i] = p;
		sh->large_size[me][i] = n;
		if (p != NULL) {
			((unsigned char *)p)[0] = tag;
			((unsigned char *)p)[n - 1] = tag;
		}
	}
	pthread_barrier_wait(&sh->phase);
	pthread_barrier_wait(&sh->phase); /* the main thread has counted the live blocks */

	/* Then frees the next thread's blocks: every free crosses threads (and shards). */
	unsigned char theirs = (unsigned char)(0x40 + next);
	for (int i = 0; i < XT_SMALL; i++) {
		unsigned char *p = sh->small[next][i];
		if (p == NULL)
			continue;
		xt_expect(sh, p[0] == theirs, "small block intact", p);
		xt_expect(sh, IHostMalloc_Free(sh->heap, p) == S_OK, "small Free", p);
		if (i % 100 == 0)
			xt_expect(sh, IHostMalloc_Free(sh->heap, p) == HOST_E_INVALIDOPERATION,
				  "second Free of a small block refused", p);
	}
	for (int i = 0; i < XT_LARGE; i++) {
		unsigned char *p = sh->large[next][i];
		if (p == NULL)
			continue;
		xt_expect(sh, p[0] == theirs && p[sh->large_size[next][i] - 1] == theirs,
			  "large block intact", p);
		xt_expect(sh, IHostMalloc_Free(sh->heap, p + 4096) == HOST_E_INVALIDOPERATION,
			  "Free inside a large block refused", p);
		xt_expect(sh, IHostMalloc_Free(sh->heap, p) == S_OK, "large Free", p);
		xt_expect(sh, IHostMalloc_Free(sh->heap, p) == HOST_E_INVALIDOPERATION,
			  "second Free of a large block refused", p);
	}
	pthread_barrier_wait(&sh->phase);
	pthread_barrier_wait(&sh->phase); /* the main thread has checked the bounds */
	return NULL;
}

/* Four threads allocate, then free each other's blocks. While they live, what the heap holds
 * beyond its live blocks stays within its bounds (the pool within its bound per thread, the
 * threads' caches within their spans); trim gives the pool back; once the threads are gone, trim
 * gives everything back and the broker's books agree. */
static void test_heap_cross_thread_frees_bounds_and_trim(void **state)
{
	(void)state;
	mb_client *c = connect_to(&g_broker);
	IHostMemoryManager *m = manager_of(c);
	xt_shared *sh = calloc(1, sizeof(*sh));
	pthread_t t[XT_THREADS];
	xt_arg args[XT_THREADS];
	mb_heap_stats hs;

	assert_non_null(sh);
	sh->heap = heap_of(m, MALLOC_THREADSAFE);
	assert_int_equal(pthread_barrier_init(&sh->phase, NULL, XT_THREADS + 1), 0);
	for (int i = 0; i < XT_THREADS; i++) {
		args[i] = (xt_arg){sh, i};
		assert_int_equal(pthread_create(&t[i], NULL, xt_thread, &args[i]), 0);
	}
	pthread_barrier_wait(&sh->phase);
	mb_heap_get_stats(sh->heap, &hs);
	assert_int_equal(hs.live_blocks, XT_THREADS * (XT_SMALL + XT_LARGE));
	assert_int_equal(hs.large_blocks, XT_THREADS * XT_LARGE);
	pthread_barrier_wait(&sh->phase);
	pthread_barrier_wait(&sh->phase); /* every block is freed */

	assert_int_equal(atomic_load(&sh->errors), 0);
	mb_heap_get_stats(sh->heap, &hs);
	print_message("after the cross-thread frees: committed %zu KiB, pool %zu KiB, %zu spans\n",
		      hs.committed / KiB, hs.pool / KiB, hs.small_spans);
	assert_int_equal(hs.live_blocks, 0);
	assert_int_equal(hs.large_blocks, 0);
	/* About 135 MiB of large blocks were freed: the pool keeps at most its bound per thread. */
	assert_true(hs.pool <= XT_THREADS * MB_HEAP_POOL_DEFAULT);
	/* Besides the pool, only spans of small blocks (the threads' caches, one empty per bin). */
	assert_true(hs.committed <= hs.pool + hs.small_spans * MB_HEAP_SPAN);
	assert_int_equal(hs.committed, status_of(c).committed);

	/* Trim from this thread while the others live: the pool goes back whole. */
	mb_heap_trim(sh->heap);
	mb_heap_get_stats(sh->heap, &hs);
	assert_int_equal(hs.pool, 0);
	assert_true(hs.committed <= hs.small_spans * MB_HEAP_SPAN);
	assert_int_equal(hs.committed, status_of(c).committed);

	pthread_barrier_wait(&sh->phase);
	for (int i = 0; i < XT_THREADS; i++)
		pthread_join(t[i], NULL);
	/* The threads' caches went back to their spans at their exit: trim now returns all. */
	mb_heap_trim(sh->heap);
	mb_heap_get_stats(sh->heap, &hs);
	assert_int_equal(hs.committed, 0);
	assert_int_equal(hs.pool, 0);
	assert_int_equal(hs.small_spans, 0);
	assert_int_equal(hs.segments, 0);
	assert_int_equal(status_of(c).committed, 0);
	assert_int_equal(mb_heap_leak_report(sh->heap, stderr), 0);
	assert_int_equal(IHostMalloc_Release(sh->heap), 0);
	assert_int_equal(IHostMemoryManager_Release(m), 0);
	pthread_barrier_destroy(&sh->phase);
	mb_disconnect(c);
	free(sh);
}

/* eMemoryAvailableLow makes the heap give its pool back by itself. */
static void test_heap_trims_on_low_memory(void **state)
{
	(void)state;
	mb_test_broker b;
	assert_int_equal(mb_test_broker_start(&b, (const char *[]){"--budget", "64M", NULL}), 0);
	mb_client *c = connect_to(&b), *hog = connect_to(&b);
	IHostMemoryManager *m = manager_of(c);
	IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
	mb_heap_stats hs;
	void *blk[8], *big;

	for (int i = 0; i < 8; i++)
		assert_hr(IHostMalloc_Alloc(h, 1 * MiB, eTaskCritical, &blk[i]), S_OK);
	for (int i = 0; i < 8; i++)
		assert_hr(IHostMalloc_Free(h, blk[i]), S_OK);
	mb_heap_get_stats(h, &hs);
	assert_true(hs.pool >= 8 * MiB);
	/* Another client takes the budget past 90 %: pressure turns Low. */
	assert_hr(mb_virtual_alloc(hog, NULL, 52 * MiB, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE,
				   eProcessCritical, &big),
		  S_OK);
	for (int i = 0; i < 1000; i++) { /* up to 10 s */
		mb_heap_get_stats(h, &hs);
		if (hs.committed == 0) /* the trim decommitted everything */
			break;
		usleep(10000);
	}
	assert_int_equal(hs.pool, 0);
	assert_int_equal(hs.committed, 0);
	assert_int_equal(status_of(c).committed, 0);
	assert_hr(mb_virtual_free(hog, big, 0, MEM_RELEASE), S_OK);
	assert_int_equal(IHostMalloc_Release(h), 0);
	assert_int_equal(IHostMemoryManager_Release(m), 0);
	mb_disconnect(c);
	mb_disconnect(hog);
	assert_int_equal(mb_test_broker_stop(&b), 0);
}

/* ---- levels against a small budget ---- */

#define SMALL_BUDGET (16 * MiB)

typedef struct chain {
	void *p[512];
	size_t n;
} chain;

/* Allocates blocks of size at level until refused; returns the refusal. */
static HRESULT fill_until_refused(IHostMalloc *h, size_t size, EMemoryCriticalLevel level,
				  chain *ch)
{
	for (;;) {
		void *p = (void *)0x1;
		HRESULT hr = IHostMalloc_Alloc(h, size, level, &p);
		if (hr != S_OK) {
			assert_null(p);
			return hr;
		}
		assert_true(ch->n < sizeof(ch->p) / sizeof(ch->p[0]));
		memset(p, 0xA5, size);
		ch->p[ch->n++] = p;
	}
}

static void test_heap_levels_against_budget(void **state)
{
	(void)state;
	mb_test_broker b;
	assert_int_equal(mb_test_broker_start(&b, (const char *[]){"--budget", "16M", NULL}), 0);
	mb_client *c = connect_to(&b);
	IHostMemoryManager *m = manager_of(c);
	IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
	chain *ch = calloc(1, sizeof(*ch));
	HRESULT hr;
	void *p;

	/* Charged as it goes: a 100 KB block commits at least 100 KB. */
	assert_hr(IHostMalloc_Alloc(h, 100000, eTaskCritical, &p), S_OK);
	assert_true(status_of(c).committed >= 100000);
	ch->p[ch->n++] = p;

	/* Task-critical stops at the task ceiling (90%) with E_OUTOFMEMORY, no wait. */
	hr = fill_until_refused(h, 256 * KiB, eTaskCritical, ch);
	assert_hr(hr, E_OUTOFMEMORY);
	mb_session_status st = status_of(c);
	assert_true(st.total_committed <= SMALL_BUDGET * 9 / 10);
	assert_true(st.total_committed + 256 * KiB > SMALL_BUDGET * 9 / 10);
	/* A small block at task level needs a fresh span: refused too, *ppMem NULL. */
	p = (void *)0x1;
	hr = IHostMalloc_Alloc(h, 24, eTaskCritical, &p);
	if (hr == S_OK) {
		/* only if 64 KiB still fitted under the task ceiling */
		assert_true(st.total_committed + MB_HEAP_SPAN <= SMALL_BUDGET * 9 / 10);
		ch->p[ch->n++] = p;
	} else {
		assert_hr(hr, E_OUTOFMEMORY);
		assert_null(p);
	}

	/* Process-critical still gets memory, up to the whole budget. */
	assert_hr(IHostMalloc_Alloc(h, 24, eProcessCritical, &p), S_OK);
	ch->p[ch->n++] = p;
	hr = fill_until_refused(h, 64 * KiB, eProcessCritical, ch);
	assert_true(hr == E_OUTOFMEMORY || hr == HOST_E_TIMEOUT);
	st = status_of(c);
	assert_true(st.total_committed <= SMALL_BUDGET);
	assert_true(st.total_committed + 64 * KiB > SMALL_BUDGET);
	mb_heap_stats hs;
	mb_heap_get_stats(h, &hs);
	assert_int_equal(hs.committed, st.committed);

	/* Everything back: free, and the heap's last Release returns the cached spans. */
	for (size_t i = 0; i < ch->n; i++)
		assert_hr(IHostMalloc_Free(h, ch->p[i]), S_OK);
	assert_int_equal(IHostMalloc_Release(h), 0);
	assert_int_equal(status_of(c).committed, 0);
	assert_int_equal(IHostMemoryManager_Release(m), 0);
	mb_disconnect(c);
	free(ch);
	assert_int_equal(mb_test_broker_stop(&b), 0);
}

/* ---- notifications through ICLRMemoryNotificationCallback ---- */

typedef struct test_cb {
	ICLRMemoryNotificationCallback iface;
	atomic_uint refs;
	atomic_uint low, neutral, high;
} test_cb;

static HRESULT STDMETHODCALLTYPE cb_qi(ICLRMemoryNotificationCallback *This, const IID *riid,
				       void **ppv)
{
	if (ppv == NULL)
		return E_POINTER;
	*ppv = NULL;
	if (memcmp(riid, &mb_iid_iunknown, sizeof(IID)) != 0 &&
	    memcmp(riid, &mb_iid_iclrmemorynotificationcallback, sizeof(IID)) != 0)
		return E_NOINTERFACE;
	This->lpVtbl->AddRef(This);
	*ppv = This;
	return S_OK;
}

static MB_ULONG STDMETHODCALLTYPE cb_add_ref(ICLRMemoryNotificationCallback *This)
{
	return atomic_fetch_add(&((test_cb *)This)->refs, 1) + 1;
}

static MB_ULONG STDMETHODCALLTYPE cb_release(ICLRMemoryNotificationCallback *This)
{
	return atomic_fetch_sub(&((test_cb *)This)->refs, 1) - 1; /* static object */
}

static HRESULT STDMETHODCALLTYPE cb_notify(ICLRMemoryNotificationCallback *This,
					   EMemoryAvailable level)
{
	test_cb *t = (test_cb *)This;
	if (level == eMemoryAvailableLow)
		atomic_fetch_add(&t->low, 1);
	else if (level == eMemoryAvailableNeutral)
		atomic_fetch_add(&t->neutral, 1);
	else if (level == eMemoryAvailableHigh)
		atomic_fetch_add(&t->high, 1);
	return S_OK;
}

static const ICLRMemoryNotificationCallbackVtbl cb_vtbl = {cb_qi, cb_add_ref, cb_release,
							   cb_notify};

static bool got_low(void *arg)
{
	return atomic_load(&((test_cb *)arg)->low) > 0;
}

static bool got_not_low(void *arg)
{
	test_cb *t = arg;
	return atomic_load(&t->neutral) + atomic_load(&t->high) > 0;
}

static void test_notification_through_com_callback(void **state)
{
	(void)state;
	mb_test_broker b;
	assert_int_equal(mb_test_broker_start(&b, (const char *[]){"--budget", "16M", NULL}), 0);
	mb_client *c = connect_to(&b);
	IHostMemoryManager *m = manager_of(c);
	IHostMalloc *h = heap_of(m, MALLOC_THREADSAFE);
	test_cb cb = {.iface = {&cb_vtbl}};
	chain *ch = calloc(1, sizeof(*ch));
	void *p;

	atomic_init(&cb.refs, 1);
	assert_hr(IHostMemoryManager_RegisterMemoryNotificationCallback(m, &cb.iface), S_OK);
	assert_true(atomic_load(&cb.refs) >= 2); /* the manager keeps a reference */

	/* Over 90% of the budget at process level: the broker reports Low. */
	for (size_t used = 0; used < SMALL_BUDGET * 95 / 100; used += 512 * KiB) {
		assert_hr(IHostMalloc_Alloc(h, 512 * KiB, eProcessCritical, &p), S_OK);
		ch->p[ch->n++] = p;
	}
	assert_true(mb_test_wait_for(got_low, &cb, 20000));

	/* Back under 50%: Neutral or High follows. */
	for (size_t i = 0; i < ch->n; i++)
		assert_hr(IHostMalloc_Free(h, ch->p[i]), S_OK);
	assert_true(mb_test_wait_for(got_not_low, &cb, 20000));

	assert_int_equal(IHostMalloc_Release(h), 0);
	assert_int_equal(IHostMemoryManager_Release(m), 0);
	assert_int_equal(atomic_load(&cb.refs), 1); /* the manager dropped its reference */
	mb_disconnect(c);
	free(ch);
	assert_int_equal(mb_test_broker_stop(&b), 0);
}

/* ---- the example host, three processes under one budget ---- */

/* Address space mapped by the runtime itself: counted per client, refused over the policy limit. */
static void test_address_space_notifications(void **state)
{
	char dir[] = "/tmp/mbas.XXXXXX";
	char conf[64];
	mb_test_broker b;
	mb_client *c;
	IHostMemoryManager *mm;
	mb_session_status st;
	char *const base = (char *)(uintptr_t)0x200000000000ULL;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(conf, sizeof(conf), "%s/membroker.conf", dir);
	FILE *f = fopen(conf, "w");
	assert_non_null(f);
	fputs("[limits]\nclient_max_mapped = 8M\n", f);
	fclose(f);
	assert_int_equal(mb_test_broker_start(&b, (const char *[]){"--config", conf, NULL}), 0);
	assert_int_equal(mb_connect(b.address, &c), S_OK);
	assert_int_equal(mb_host_memory_manager(c, &mm), S_OK);

	assert_int_equal(mm->lpVtbl->NeedsVirtualAddressSpace(mm, base, 4 << 20), S_OK);
	assert_int_equal(mm->lpVtbl->AcquiredVirtualAddressSpace(mm, base, 4 << 20), S_OK);
	assert_int_equal(mm->lpVtbl->AcquiredVirtualAddressSpace(mm, base + (16 << 20), 2 << 20),
			 S_OK);
	assert_int_equal(mb_get_session_status(c, &st), S_OK);
	assert_int_equal(st.mapped, 6 << 20);
	/* 6 MiB of 8 MiB are in use: 4 MiB more is refused, so the runtime would not map it. */
	assert_int_equal(mm->lpVtbl->NeedsVirtualAddressSpace(mm, base + (32 << 20), 4 << 20),
			 E_OUTOFMEMORY);
	assert_int_equal(mm->lpVtbl->ReleasedVirtualAddressSpace(mm, base), S_OK);
	assert_int_equal(mm->lpVtbl->ReleasedVirtualAddressSpace(mm, base),
			 HOST_E_INVALIDOPERATION);
	assert_int_equal(mm->lpVtbl->NeedsVirtualAddressSpace(mm, base + (32 << 20), 4 << 20),
			 S_OK);
	assert_int_equal(mb_get_session_status(c, &st), S_OK);
	assert_int_equal(st.mapped, 2 << 20);
	assert_int_equal(mm->lpVtbl->AcquiredVirtualAddressSpace(mm, NULL, 4096), E_INVALIDARG);

	mm->lpVtbl->Release(mm);
	mb_disconnect(c);
	mb_test_broker_stop(&b);
	unlink(conf);
	rmdir(dir);
}

static void test_clrhost_three_processes(void **state)
{
	(void)state;
	char path[512], dir[512];
	snprintf(dir, sizeof(dir), "%s", MEMBROKERD_PATH);
	/* <build>/daemon/membrokerd → <build>/examples/mb_clrhost */
	snprintf(path, sizeof(path), "%s/examples/mb_clrhost", dirname(dirname(dir)));
	if (access(path, X_OK) != 0) {
		print_message("%s not built (cmake --build ... --target mb_clrhost): skipped\n",
			      path);
		skip();
	}
	mb_test_broker b;
	assert_int_equal(mb_test_broker_start(&b, (const char *[]){"--budget", "48M", NULL}), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl(path, path, "--address", b.address, "--spawn", "3", "--seconds", "3",
		      (char *)NULL);
		_exit(127);
	}
	int status = 0;
	/* Generous: 3 s of work each, plus start-up and shutdown on a loaded machine. */
	for (int waited = 0; waited < 240000; waited += 50) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		assert_true(r == 0);
		usleep(50000);
		if (waited + 50 >= 240000) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			fail_msg("mb_clrhost did not finish");
		}
	}
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(mb_test_broker_stop(&b), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_vtable_layout),
	    cmocka_unit_test(test_manager_query_interface_and_refs),
	    cmocka_unit_test(test_disconnect_while_manager_alive),
	    cmocka_unit_test(test_create_malloc_arguments_and_heap_identity),
	    cmocka_unit_test(test_heap_basic_sizes_and_accounting),
	    cmocka_unit_test(test_heap_free_of_foreign_pointers),
	    cmocka_unit_test(test_heap_debug_alloc_leak_report),
	    cmocka_unit_test(test_heap_executable),
	    cmocka_unit_test(test_heap_multithreaded_stress),
	    cmocka_unit_test(test_heap_levels_against_budget),
	    cmocka_unit_test(test_heap_large_reuse_bounded_and_trim),
	    cmocka_unit_test(test_heap_cross_thread_frees_bounds_and_trim),
	    cmocka_unit_test(test_heap_trims_on_low_memory),
	    cmocka_unit_test(test_notification_through_com_callback),
	    cmocka_unit_test(test_address_space_notifications),
	    cmocka_unit_test(test_clrhost_three_processes),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
