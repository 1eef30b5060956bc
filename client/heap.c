/*
 * heap.c: IHostMalloc over the broker: the object a runtime gets from CreateMalloc. Every block
 * lives in memory reserved and committed through mb_virtual_alloc of the owning client, so the
 * broker's budget and per-level ceilings apply to the heap as to VirtualAlloc.
 *
 *   - Small blocks (up to MB_HEAP_MAX_SMALL) come from per-thread caches over 64 KiB spans of one
 *     size class and level (heap_small.c): no lock and no broker call on the common path.
 *   - Larger blocks are runs of 64 KiB granules inside 4 MiB segments (heap_pages.c), or a
 *     segment of their own above 4 MiB. A freed run stays committed in a bounded pool and is
 *     reused by the next request at its level, so a steady mix of large blocks makes no round
 *     trip either. The pool is emptied by mb_heap_trim and when the broker reports
 *     eMemoryAvailableLow.
 *   - Metadata (span records, bitmaps, the address directory) is kept outside the blocks, so Free
 *     answers HOST_E_INVALIDOPERATION for a foreign, interior or already freed pointer without
 *     touching the memory. Free(NULL) is S_OK; Alloc(0) returns a unique 16-byte block.
 *
 * Thread safety: every heap is safe to use from any number of threads (MALLOC_THREADSAFE costs
 * nothing extra, so it is not needed to get it). A block may be freed by any thread.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "heap_internal.h"

/* Anything above this can never be committed (the user address space is 2^47 bytes). */
#define MAX_ALLOC ((size_t)1 << 46)

static atomic_uint_fast64_t next_heap_id = 1;

static mb_heap *impl(IHostMalloc *This)
{
	return (mb_heap *)This;
}

/* What mb_client_usable_or_reconnect checks, without clearing the thread's last error or
 * reconnecting on the hot path: blocks can be handed out from caches while the broker is away. */
static HRESULT usable(mb_heap *h)
{
	mb_client *c = h->client;

	if (__builtin_expect(c->fork_generation != atomic_load_explicit(&mb_fork_generation,
									memory_order_relaxed) ||
				 atomic_load_explicit(&c->disabled, memory_order_relaxed),
			     0))
		return mb_client_usable_or_reconnect(c);
	return S_OK;
}

static HRESULT alloc_large(mb_heap *h, size_t size, int level, void **out)
{
	size_t n = (size + HEAP_GRAN - 1) / HEAP_GRAN;
	heap_gran *g;
	HRESULT hr = n <= HEAP_SEG_GRANS ? mb_heap_run_alloc(h, n, level, &g)
					 : mb_heap_huge_alloc(h, size, level, &g);

	if (hr != S_OK)
		return hr;
	g->size = (size_t)g->ngran * HEAP_GRAN;
	atomic_store_explicit(&g->live, 1, memory_order_relaxed);
	atomic_fetch_add(&h->larges, 1);
	atomic_store_explicit(&g->kind, GRAN_LARGE, memory_order_release);
	*out = (void *)g->base;
	return S_OK;
}

static HRESULT heap_alloc(mb_heap *h, SIZE_T size, EMemoryCriticalLevel level, const char *file,
			  int line, bool debug, void **ppMem)
{
	HRESULT hr;
	void *p;

	if (ppMem == NULL)
		return mb_client_error(E_POINTER, "ppMem is NULL");
	*ppMem = NULL;
	if ((int)level < eTaskCritical || (int)level > eProcessCritical)
		return mb_client_error(E_INVALIDARG, "invalid critical level %d", (int)level);
	if ((hr = usable(h)) != S_OK)
		return hr;
	if (size <= MB_HEAP_MAX_SMALL)
		hr = mb_heap_small_alloc(h, mb_heap_class_of(size), (int)level, &p);
	else if (size > MAX_ALLOC)
		return mb_client_error(E_OUTOFMEMORY, "%zu bytes can never be allocated", size);
	else
		hr = alloc_large(h, size, (int)level, &p);
	if (hr != S_OK)
		return hr;
	if (debug && mb_heap_debug_add(h, p, file, line) != 0) {
		h->iface.lpVtbl->Free(&h->iface, p);
		return mb_client_error(E_OUTOFMEMORY, "no memory for the DebugAlloc record");
	}
	*ppMem = p;
	return S_OK;
}

/* Index of the block of small span g at p, or -1 when p is not the start of one. */
static int64_t block_index(const heap_gran *g, uintptr_t p)
{
	uint64_t off = p - g->base, idx = (off * g->magic) >> 40;

	if (off >= HEAP_GRAN || idx * g->size != off || idx >= g->nblocks)
		return -1;
	return (int64_t)idx;
}

static HRESULT heap_free(mb_heap *h, void *pMem)
{
	uintptr_t p = (uintptr_t)pMem;
	heap_gran *g = mb_heap_gran_of(h, p);
	uint8_t kind = g != NULL ? atomic_load_explicit(&g->kind, memory_order_acquire) : GRAN_FREE;

	if (g == NULL)
		return mb_client_error(HOST_E_INVALIDOPERATION, "%p was not allocated by this heap",
				       pMem);
	if (kind == GRAN_SMALL) {
		int64_t idx = block_index(g, p);
		if (idx < 0)
			return mb_client_error(HOST_E_INVALIDOPERATION,
					       "%p is not the start of a block of this heap", pMem);
		if (atomic_exchange_explicit(&g->state[idx], 0, memory_order_relaxed) != 1)
			return mb_client_error(
			    HOST_E_INVALIDOPERATION,
			    "%p is not allocated (freed already or never handed out)", pMem);
		/* Before the block can be handed out again, so a new record at p is never dropped.
		 */
		mb_heap_debug_remove(h, p);
		mb_heap_small_free(h, g, (uint32_t)idx, p);
		return S_OK;
	}
	if (kind == GRAN_CONT || (kind == GRAN_LARGE && p != g->base))
		return mb_client_error(HOST_E_INVALIDOPERATION, "%p is inside a block of this heap",
				       pMem);
	if (kind != GRAN_LARGE || atomic_exchange_explicit(&g->live, 0, memory_order_relaxed) != 1)
		return mb_client_error(HOST_E_INVALIDOPERATION, "%p was freed already", pMem);
	mb_heap_debug_remove(h, p);
	atomic_fetch_sub(&h->larges, 1);
	mb_heap_run_free(h, g);
	return S_OK;
}

/* ---- IHostMalloc ---- */

static int iid_equal(const IID *a, const IID *b)
{
	return memcmp(a, b, sizeof(IID)) == 0;
}

static HRESULT STDMETHODCALLTYPE hm_query_interface(IHostMalloc *This, const IID *riid, void **ppv)
{
	if (ppv == NULL)
		return E_POINTER;
	*ppv = NULL;
	if (This == NULL || riid == NULL)
		return E_INVALIDARG;
	if (!iid_equal(riid, &mb_iid_iunknown) && !iid_equal(riid, &mb_iid_ihostmalloc))
		return E_NOINTERFACE;
	This->lpVtbl->AddRef(This);
	*ppv = This;
	return S_OK;
}

static MB_ULONG STDMETHODCALLTYPE hm_add_ref(IHostMalloc *This)
{
	return atomic_fetch_add(&impl(This)->refs, 1) + 1;
}

/* Low memory: the pool and empty spans go back now, and while the pressure stays Low every freed
 * run goes back at once (otherwise blocks freed after the report would sit in the pool and keep
 * the pressure Low). */
static void on_pressure(EMemoryAvailable level, void *context)
{
	mb_heap *h = context;

	atomic_store(&h->low, level == eMemoryAvailableLow);
	if (level == eMemoryAvailableLow)
		mb_heap_trim(&h->iface);
}

static void heap_destroy(mb_heap *h)
{
	/* Last reference: no other thread may use the heap. */
	mb_notify_remove_hook(h->client, &h->hook);
	mb_heap_small_destroy(h);
	mb_heap_pages_destroy(h);
	mb_heap_debug_destroy(h);
	mb_client_unref(h->client);
	free(h);
}

static MB_ULONG STDMETHODCALLTYPE hm_release(IHostMalloc *This)
{
	mb_heap *h = impl(This);
	unsigned left = atomic_fetch_sub(&h->refs, 1) - 1;

	if (left == 0)
		heap_destroy(h);
	return left;
}

static HRESULT STDMETHODCALLTYPE hm_alloc(IHostMalloc *This, SIZE_T cbSize,
					  EMemoryCriticalLevel eCriticalLevel, void **ppMem)
{
	return heap_alloc(impl(This), cbSize, eCriticalLevel, NULL, 0, false, ppMem);
}

static HRESULT STDMETHODCALLTYPE hm_debug_alloc(IHostMalloc *This, SIZE_T cbSize,
						EMemoryCriticalLevel eCriticalLevel,
						char *pszFileName, int iLineNo, void **ppMem)
{
	return heap_alloc(impl(This), cbSize, eCriticalLevel, pszFileName, iLineNo, true, ppMem);
}

static HRESULT STDMETHODCALLTYPE hm_free(IHostMalloc *This, void *pMem)
{
	mb_heap *h = impl(This);
	HRESULT hr;

	if (pMem == NULL)
		return S_OK;
	if ((hr = usable(h)) != S_OK)
		return hr;
	return heap_free(h, pMem);
}

static const IHostMallocVtbl hm_vtbl = {
    hm_query_interface, hm_add_ref, hm_release, hm_alloc, hm_debug_alloc, hm_free,
};

HRESULT mb_heap_create(mb_client *client, DWORD type, IHostMalloc **out)
{
	mb_heap *h;
	HRESULT hr;

	if (out == NULL)
		return mb_client_error(E_POINTER, "ppMalloc is NULL");
	*out = NULL;
	if (type & ~(DWORD)(MALLOC_THREADSAFE | MALLOC_EXECUTABLE))
		return mb_client_error(
		    E_INVALIDARG, "unknown MALLOC_TYPE bits 0x%" PRIx32,
		    (uint32_t)(type & ~(DWORD)(MALLOC_THREADSAFE | MALLOC_EXECUTABLE)));
	if ((hr = mb_client_usable_or_reconnect(client)) != S_OK)
		return hr;
	h = aligned_alloc(HEAP_CACHELINE, sizeof(*h)); /* its cache-line separation holds */
	if (h == NULL)
		return mb_client_error(E_OUTOFMEMORY, "no memory for the heap");
	memset(h, 0, sizeof(*h));
	h->iface.lpVtbl = &hm_vtbl;
	atomic_init(&h->refs, 1);
	atomic_init(&h->low, false);
	h->id = atomic_fetch_add(&next_heap_id, 1);
	h->threadsafe = (type & MALLOC_THREADSAFE) != 0;
	h->protect = (type & MALLOC_EXECUTABLE) ? PAGE_EXECUTE_READWRITE : PAGE_READWRITE;
	pthread_mutex_init(&h->debug_lock, NULL);
	mb_heap_pages_init(h);
	mb_heap_small_init(h);
	mb_client_ref(client);
	h->client = client;
	/* Low memory: give the pool and empty spans back (on the library's notification thread). */
	h->hook.fn = on_pressure;
	h->hook.context = h;
	if (mb_notify_add_hook(client, &h->hook) != S_OK) {
		heap_destroy(h);
		return mb_client_error(E_OUTOFMEMORY, "cannot start the notification thread");
	}
	*out = &h->iface;
	return S_OK;
}

/* ---- internal tools ---- */

typedef struct report_ctx {
	FILE *out;
	size_t blocks, live_small, live_large, used_bytes;
} report_ctx;

static void report_block(mb_heap *h, FILE *out, uintptr_t p, size_t size, int level)
{
	static const char *const names[HEAP_NLEVELS] = {"eTaskCritical", "eAppDomainCritical",
							"eProcessCritical"};
	char file[256];
	int line;

	if (out == NULL)
		return;
	mb_heap_debug_describe(h, p, file, sizeof(file), &line);
	if (line >= 0)
		fprintf(out, "leak: %p %zu bytes %s allocated at %s:%d\n", (void *)p, size,
			names[level], file, line);
	else
		fprintf(out, "leak: %p %zu bytes %s (Alloc, no location)\n", (void *)p, size,
			names[level]);
}

static void visit(mb_heap *h, heap_gran *g, void *arg)
{
	report_ctx *r = arg;
	uint8_t kind = atomic_load(&g->kind);

	if (kind == GRAN_LARGE) {
		if (atomic_load(&g->live) == 1) {
			report_block(h, r->out, g->base, g->size, g->seg->level);
			r->blocks++;
			r->live_large++;
			r->used_bytes += g->size;
		}
		return;
	}
	for (uint32_t i = 0; i < g->nblocks; i++) {
		if (atomic_load_explicit(&g->state[i], memory_order_relaxed) != 1)
			continue;
		report_block(h, r->out, g->base + i * g->size, g->size, g->seg->level);
		r->blocks++;
		r->live_small++;
		r->used_bytes += g->size;
	}
}

size_t mb_heap_leak_report(IHostMalloc *heap, FILE *out)
{
	report_ctx r = {.out = out};

	mb_heap_pages_walk(impl(heap), visit, &r);
	if (out != NULL)
		fprintf(out, "%zu block(s) still allocated\n", r.blocks);
	return r.blocks;
}

void mb_heap_trim(IHostMalloc *heap)
{
	mb_heap *h = impl(heap);

	mb_heap_small_trim(h);
	mb_heap_pages_trim(h);
}

void mb_heap_get_stats(IHostMalloc *heap, mb_heap_stats *st)
{
	mb_heap *h = impl(heap);
	report_ctx r = {.out = NULL};

	mb_heap_pages_walk(h, visit, &r);
	st->small_spans = atomic_load(&h->spans);
	st->large_blocks = atomic_load(&h->larges);
	st->live_blocks = r.blocks;
	st->committed = atomic_load(&h->committed);
	st->pool = mb_heap_pool_bytes(h);
	st->segments = atomic_load(&h->segments);
	st->in_use = r.used_bytes;
}

size_t mb_heap_block_size(IHostMalloc *heap, const void *p)
{
	mb_heap *h = impl(heap);
	heap_gran *g = mb_heap_gran_of(h, (uintptr_t)p);

	if (g == NULL)
		return 0;
	uint8_t kind = atomic_load_explicit(&g->kind, memory_order_acquire);
	if (kind == GRAN_SMALL) {
		int64_t idx = block_index(g, (uintptr_t)p);
		return idx >= 0 ? g->size : 0;
	}
	return kind == GRAN_LARGE && (uintptr_t)p == g->base ? g->size : 0;
}
