/*
 * heap.c: IHostMalloc over the broker: a size-class heap whose blocks come only from
 * mb_virtual_alloc of the owning client.
 *
 * Layout
 *   - 40 size classes: 16..128 in steps of 16, then four steps per doubling up to 32 KiB
 *     (160, 192, 224, 256, 320, ... 28672, 32768). Every class is a multiple of 16, so every block
 *     is 16-byte aligned.
 *   - A small block lives in a 64 KiB span: one reservation (64 KiB aligned, the allocation
 *     granularity) committed in one go at one critical level and carved into blocks of one class.
 *     Spans are kept per (class, level) in a "bin", so memory handed out at a level was committed
 * at that level and the broker's per-level ceilings apply to the heap as they do to VirtualAlloc.
 *   - A request over 32 KiB gets a reservation of its own (size rounded up to 4 KiB pages),
 * committed at the request's level and released by Free.
 *   - When a span becomes empty it is released to the broker, except that each bin keeps one empty
 *     span cached (dropped by mb_heap_trim and at the last Release).
 *
 * Metadata is out of band (process heap): per span ~100 bytes plus a bitmap with one bit per block
 * (at most 512 bytes, for the 16-byte class). A directory maps a span's base >> 16 to its record
 * (open addressing, linear probing, backward-shift deletion). Free looks the pointer up there and
 * checks that it is the start of a block of that span and that the block is allocated, so a foreign
 * pointer, an interior pointer, another heap's block and a double free all answer
 * HOST_E_INVALIDOPERATION without touching the memory. Free(NULL) is S_OK and does nothing, as
 * free(NULL) does. Alloc(0) returns a unique 16-byte block.
 *
 * Locking (MALLOC_THREADSAFE only; without it the caller serialises and no lock is taken): the
 * directory has a read-write lock, each bin a mutex, the DebugAlloc side table a mutex. Order:
 * directory → bin → debug table; no lock is held across a round trip to the broker.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "heap.h"

#define NCLASSES    40
#define NLEVELS	    3
#define LARGE_CLASS 0xFF
#define PAGE	    ((size_t)4096)
/* Anything above this can never be committed (the user address space is 2^47 bytes). */
#define MAX_ALLOC ((size_t)1 << 46)

static const uint32_t class_size[NCLASSES] = {
    16,	  32,	48,   64,   80,	   96,	  112,	 128,	160,   192,   224,   256,   320,  384,
    448,  512,	640,  768,  896,   1024,  1280,	 1536,	1792,  2048,  2560,  3072,  3584, 4096,
    5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384, 20480, 24576, 28672, 32768,
};

typedef struct span {
	uintptr_t base;
	size_t size;	   /* small: the class's block size; large: the committed size */
	uint32_t nblocks;  /* small only */
	uint32_t nfree;	   /* small only */
	uint32_t hint;	   /* first bitmap word that may have a free bit */
	uint8_t cls;	   /* class index, or LARGE_CLASS */
	uint8_t level;	   /* EMemoryCriticalLevel it was committed at */
	bool dying;	   /* small: unlinked, about to be released; only Free can still see it */
	atomic_bool freed; /* large: Free has claimed it */
	struct span *prev, *next; /* the bin's list of spans with free blocks */
	uint64_t used[];	  /* small only: one bit per block (tail bits past nblocks set) */
} span;

typedef struct bin {
	pthread_mutex_t lock;
	span *partial;	/* spans with at least one free block, not dying */
	unsigned empty; /* how many spans on the list are entirely free (0 or 1 kept) */
} bin;

typedef struct dbg_rec {
	uintptr_t ptr;
	int line;
	struct dbg_rec *next;
	char file[];
} dbg_rec;

typedef struct mb_heap {
	IHostMalloc iface; /* first: the pointer handed out is the object */
	atomic_uint refs;
	mb_client *client;
	bool threadsafe;
	DWORD protect;

	pthread_rwlock_t map_lock;
	span **table; /* open addressing by base >> 16; cap is a power of two */
	size_t cap, count;

	bin bins[NCLASSES][NLEVELS];

	pthread_mutex_t debug_lock;
	dbg_rec **dtable;
	size_t dcap, dcount;
	atomic_size_t ndebug;

	atomic_size_t committed, live, spans, larges;
} mb_heap;

static mb_heap *impl(IHostMalloc *This)
{
	return (mb_heap *)This;
}

/* ---- locks (no-ops for a heap created without MALLOC_THREADSAFE) ---- */

static void rd_lock(mb_heap *h)
{
	if (h->threadsafe)
		pthread_rwlock_rdlock(&h->map_lock);
}

static void wr_lock(mb_heap *h)
{
	if (h->threadsafe)
		pthread_rwlock_wrlock(&h->map_lock);
}

static void map_unlock(mb_heap *h)
{
	if (h->threadsafe)
		pthread_rwlock_unlock(&h->map_lock);
}

static void bin_lock(mb_heap *h, bin *b)
{
	if (h->threadsafe)
		pthread_mutex_lock(&b->lock);
}

static void bin_unlock(mb_heap *h, bin *b)
{
	if (h->threadsafe)
		pthread_mutex_unlock(&b->lock);
}

static void dbg_lock(mb_heap *h)
{
	if (h->threadsafe)
		pthread_mutex_lock(&h->debug_lock);
}

static void dbg_unlock(mb_heap *h)
{
	if (h->threadsafe)
		pthread_mutex_unlock(&h->debug_lock);
}

/* ---- size classes ---- */

static unsigned class_of(size_t n)
{
	unsigned lo = 0, hi = NCLASSES - 1;

	if (n <= 128)
		return n == 0 ? 0 : (unsigned)((n + 15) / 16 - 1);
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (class_size[mid] >= n)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

/* ---- the span directory ---- */

static size_t slot_of(const mb_heap *h, uintptr_t key)
{
	return (size_t)((key * UINT64_C(0x9E3779B97F4A7C15)) >> 20) & (h->cap - 1);
}

static span *map_find(const mb_heap *h, uintptr_t addr)
{
	uintptr_t key = addr / MB_HEAP_SPAN;

	if (h->cap == 0)
		return NULL;
	for (size_t i = slot_of(h, key);; i = (i + 1) & (h->cap - 1)) {
		span *s = h->table[i];
		if (s == NULL)
			return NULL;
		if (s->base / MB_HEAP_SPAN == key)
			return s;
	}
}

/* Places s in the table of h (whose cap is already the table's). */
static void map_put(mb_heap *h, span *s)
{
	size_t i = slot_of(h, s->base / MB_HEAP_SPAN);

	while (h->table[i] != NULL)
		i = (i + 1) & (h->cap - 1);
	h->table[i] = s;
}

/* Called with the directory write-locked. Returns -1 when out of memory. */
static int map_insert(mb_heap *h, span *s)
{
	if ((h->count + 1) * 2 > h->cap) {
		size_t ncap = h->cap ? h->cap * 2 : 64, ocap = h->cap;
		span **nt = calloc(ncap, sizeof(*nt)), **ot = h->table;
		if (nt == NULL)
			return -1;
		h->table = nt;
		h->cap = ncap;
		for (size_t i = 0; i < ocap; i++)
			if (ot[i] != NULL)
				map_put(h, ot[i]);
		free(ot);
	}
	map_put(h, s);
	h->count++;
	return 0;
}

/* Called with the directory write-locked; s must be in it. */
static void map_remove(mb_heap *h, span *s)
{
	size_t mask = h->cap - 1, i = slot_of(h, s->base / MB_HEAP_SPAN);

	while (h->table[i] != s)
		i = (i + 1) & mask;
	h->table[i] = NULL;
	/* Backward-shift: move later members of the probe run into the hole where they belong. */
	for (size_t j = (i + 1) & mask; h->table[j] != NULL; j = (j + 1) & mask) {
		size_t home = slot_of(h, h->table[j]->base / MB_HEAP_SPAN);
		bool between = i <= j ? (i < home && home <= j) : (i < home || home <= j);
		if (!between) {
			h->table[i] = h->table[j];
			h->table[j] = NULL;
			i = j;
		}
	}
	h->count--;
}

/* ---- the DebugAlloc side table ---- */

static size_t dslot(const mb_heap *h, uintptr_t p)
{
	return (size_t)(((uint64_t)p * UINT64_C(0x9E3779B97F4A7C15)) >> 24) & (h->dcap - 1);
}

static int debug_add(mb_heap *h, void *p, const char *file, int line)
{
	size_t len = file ? strlen(file) : 0;
	dbg_rec *r = malloc(sizeof(*r) + len + 1);

	if (r == NULL)
		return -1;
	r->ptr = (uintptr_t)p;
	r->line = line;
	memcpy(r->file, file ? file : "", len + 1);
	dbg_lock(h);
	if (h->dcount + 1 > h->dcap * 2) {
		size_t ncap = h->dcap ? h->dcap * 2 : 256, ocap = h->dcap;
		dbg_rec **nt = calloc(ncap, sizeof(*nt)), **ot = h->dtable;
		if (nt == NULL) {
			dbg_unlock(h);
			free(r);
			return -1;
		}
		h->dtable = nt;
		h->dcap = ncap;
		for (size_t i = 0; i < ocap; i++)
			for (dbg_rec *e = ot[i], *n; e != NULL; e = n) {
				n = e->next;
				size_t k = dslot(h, e->ptr);
				e->next = nt[k];
				nt[k] = e;
			}
		free(ot);
	}
	size_t k = dslot(h, r->ptr);
	r->next = h->dtable[k];
	h->dtable[k] = r;
	h->dcount++;
	atomic_fetch_add(&h->ndebug, 1);
	dbg_unlock(h);
	return 0;
}

/* Drops the record of p, if any. */
static void debug_remove(mb_heap *h, uintptr_t p)
{
	dbg_rec *gone = NULL;

	if (atomic_load(&h->ndebug) == 0)
		return;
	dbg_lock(h);
	if (h->dcap != 0) {
		for (dbg_rec **e = &h->dtable[dslot(h, p)]; *e != NULL; e = &(*e)->next)
			if ((*e)->ptr == p) {
				gone = *e;
				*e = gone->next;
				h->dcount--;
				atomic_fetch_sub(&h->ndebug, 1);
				break;
			}
	}
	dbg_unlock(h);
	free(gone);
}

/* Called with the debug table locked. */
static const dbg_rec *debug_find(const mb_heap *h, uintptr_t p)
{
	if (h->dcap == 0)
		return NULL;
	for (const dbg_rec *e = h->dtable[dslot(h, p)]; e != NULL; e = e->next)
		if (e->ptr == p)
			return e;
	return NULL;
}

/* ---- spans ---- */

static void list_push(bin *b, span *s)
{
	s->prev = NULL;
	s->next = b->partial;
	if (b->partial != NULL)
		b->partial->prev = s;
	b->partial = s;
}

static void list_unlink(bin *b, span *s)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		b->partial = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
}

/* Returns the span's memory to the broker and frees its record. */
static void span_release(mb_heap *h, span *s)
{
	size_t bytes = s->cls == LARGE_CLASS ? s->size : MB_HEAP_SPAN;

	mb_virtual_free(h->client, (void *)s->base, 0, MEM_RELEASE);
	atomic_fetch_sub(&h->committed, bytes);
	if (s->cls == LARGE_CLASS)
		atomic_fetch_sub(&h->larges, 1);
	else
		atomic_fetch_sub(&h->spans, 1);
	free(s);
}

/* Reserves and commits memory at level and records it in the directory. */
static HRESULT span_new(mb_heap *h, unsigned cls, int level, size_t bytes, span **out)
{
	size_t words = 0;
	uint32_t nblocks = 0;
	void *mem;
	span *s;
	HRESULT hr;

	if (cls != LARGE_CLASS) {
		nblocks = (uint32_t)(MB_HEAP_SPAN / class_size[cls]);
		words = (nblocks + 63) / 64;
	}
	s = calloc(1, sizeof(*s) + words * sizeof(uint64_t));
	if (s == NULL)
		return mb_client_error(E_OUTOFMEMORY, "no memory for heap metadata");
	hr = mb_virtual_alloc(h->client, NULL, bytes, MEM_RESERVE | MEM_COMMIT, h->protect,
			      (EMemoryCriticalLevel)level, &mem);
	if (hr != S_OK) {
		free(s);
		return hr;
	}
	s->base = (uintptr_t)mem;
	s->cls = (uint8_t)cls;
	s->level = (uint8_t)level;
	atomic_init(&s->freed, false);
	if (cls != LARGE_CLASS) {
		s->size = class_size[cls];
		s->nblocks = s->nfree = nblocks;
		if (nblocks % 64 != 0)
			s->used[words - 1] = ~UINT64_C(0) << (nblocks % 64);
	} else {
		s->size = bytes;
	}
	wr_lock(h);
	int rv = map_insert(h, s);
	map_unlock(h);
	atomic_fetch_add(&h->committed, bytes);
	if (cls == LARGE_CLASS)
		atomic_fetch_add(&h->larges, 1);
	else
		atomic_fetch_add(&h->spans, 1);
	if (rv != 0) {
		span_release(h, s);
		return mb_client_error(E_OUTOFMEMORY, "no memory for the heap directory");
	}
	*out = s;
	return S_OK;
}

/* Takes a free block of s (which has one); called with its bin locked. */
static void *span_take(bin *b, span *s)
{
	size_t words = (s->nblocks + 63) / 64;

	for (size_t w = s->hint; w < words; w++) {
		uint64_t freebits = ~s->used[w];
		if (freebits == 0)
			continue;
		unsigned bit = (unsigned)__builtin_ctzll(freebits);
		s->used[w] |= UINT64_C(1) << bit;
		s->hint = (uint32_t)w;
		if (s->nfree == s->nblocks)
			b->empty--;
		if (--s->nfree == 0)
			list_unlink(b, s);
		return (void *)(s->base + (w * 64 + bit) * s->size);
	}
	abort(); /* nfree said there was one: the metadata is corrupt */
}

static HRESULT alloc_small(mb_heap *h, size_t size, int level, void **out)
{
	unsigned cls = class_of(size);
	bin *b = &h->bins[cls][level];
	span *s;
	HRESULT hr;

	bin_lock(h, b);
	if (b->partial != NULL) {
		*out = span_take(b, b->partial);
		bin_unlock(h, b);
		return S_OK;
	}
	bin_unlock(h, b);
	/* No free block at this level: commit a fresh span (a round trip, no lock held). */
	if ((hr = span_new(h, cls, level, MB_HEAP_SPAN, &s)) != S_OK)
		return hr;
	bin_lock(h, b);
	b->empty++; /* counted as empty until span_take */
	list_push(b, s);
	*out = span_take(b, s);
	bin_unlock(h, b);
	return S_OK;
}

static HRESULT alloc_large(mb_heap *h, size_t size, int level, void **out)
{
	size_t bytes = (size + PAGE - 1) & ~(PAGE - 1);
	span *s;
	HRESULT hr;

	if ((hr = span_new(h, LARGE_CLASS, level, bytes, &s)) != S_OK)
		return hr;
	*out = (void *)s->base;
	return S_OK;
}

static HRESULT heap_alloc(mb_heap *h, SIZE_T size, EMemoryCriticalLevel level, const char *file,
			  int line, bool debug, void **ppMem)
{
	HRESULT hr;

	if (ppMem == NULL)
		return mb_client_error(E_POINTER, "ppMem is NULL");
	*ppMem = NULL;
	if ((int)level < eTaskCritical || (int)level > eProcessCritical)
		return mb_client_error(E_INVALIDARG, "invalid critical level %d", (int)level);
	if ((hr = mb_client_usable_or_reconnect(h->client)) != S_OK)
		return hr;
	if (size > MAX_ALLOC)
		return mb_client_error(E_OUTOFMEMORY, "%zu bytes can never be allocated", size);
	void *p;
	hr = size <= MB_HEAP_MAX_SMALL ? alloc_small(h, size, (int)level, &p)
				       : alloc_large(h, size, (int)level, &p);
	if (hr != S_OK)
		return hr;
	atomic_fetch_add(&h->live, 1);
	if (debug && debug_add(h, p, file, line) != 0) {
		h->iface.lpVtbl->Free(&h->iface, p);
		return mb_client_error(E_OUTOFMEMORY, "no memory for the DebugAlloc record");
	}
	*ppMem = p;
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

static void heap_destroy(mb_heap *h)
{
	/* Last reference: no other thread may use the heap, so no locks. */
	for (size_t i = 0; i < h->cap; i++)
		if (h->table[i] != NULL)
			span_release(h, h->table[i]);
	free(h->table);
	for (size_t i = 0; i < h->dcap; i++)
		for (dbg_rec *e = h->dtable[i], *n; e != NULL; e = n) {
			n = e->next;
			free(e);
		}
	free(h->dtable);
	for (unsigned c = 0; c < NCLASSES; c++)
		for (unsigned l = 0; l < NLEVELS; l++)
			pthread_mutex_destroy(&h->bins[c][l].lock);
	pthread_mutex_destroy(&h->debug_lock);
	pthread_rwlock_destroy(&h->map_lock);
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
	uintptr_t p = (uintptr_t)pMem;
	bool destroy = false;
	HRESULT hr;
	span *s;

	if (pMem == NULL)
		return S_OK;
	if ((hr = mb_client_usable_or_reconnect(h->client)) != S_OK)
		return hr;
	rd_lock(h);
	s = map_find(h, p);
	if (s == NULL) {
		map_unlock(h);
		return mb_client_error(HOST_E_INVALIDOPERATION, "%p was not allocated by this heap",
				       pMem);
	}
	if (s->cls == LARGE_CLASS) {
		if (p != s->base || atomic_exchange(&s->freed, true)) {
			map_unlock(h);
			return mb_client_error(HOST_E_INVALIDOPERATION,
					       p != s->base ? "%p is inside a block of this heap"
							    : "%p was freed already",
					       pMem);
		}
		map_unlock(h);
		debug_remove(h, p);
		wr_lock(h);
		map_remove(h, s);
		map_unlock(h);
		atomic_fetch_sub(&h->live, 1);
		span_release(h, s);
		return S_OK;
	}

	bin *b = &h->bins[s->cls][s->level];
	size_t off = p - s->base, idx = off / s->size;
	bin_lock(h, b);
	if (s->dying || off % s->size != 0 || idx >= s->nblocks ||
	    !(s->used[idx / 64] & (UINT64_C(1) << (idx % 64)))) {
		bool twice = s->dying || (off % s->size == 0 && idx < s->nblocks);
		bin_unlock(h, b);
		map_unlock(h);
		return mb_client_error(HOST_E_INVALIDOPERATION, "%p %s", pMem,
				       twice
					   ? "is not allocated (freed already or never handed out)"
					   : "is not the start of a block of this heap");
	}
	/* Before the block can be handed out again, so a new record at p is never dropped. */
	debug_remove(h, p);
	s->used[idx / 64] &= ~(UINT64_C(1) << (idx % 64));
	if (idx / 64 < s->hint)
		s->hint = (uint32_t)(idx / 64);
	if (s->nfree++ == 0)
		list_push(b, s);
	if (s->nfree == s->nblocks) {
		if (b->empty == 0) {
			b->empty = 1; /* keep one empty span per bin */
		} else {
			list_unlink(b, s);
			s->dying = true;
			destroy = true;
		}
	}
	bin_unlock(h, b);
	map_unlock(h);
	atomic_fetch_sub(&h->live, 1);
	if (destroy) {
		wr_lock(h);
		map_remove(h, s);
		map_unlock(h);
		span_release(h, s);
	}
	return S_OK;
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
	h = calloc(1, sizeof(*h));
	if (h == NULL)
		return mb_client_error(E_OUTOFMEMORY, "no memory for the heap");
	h->iface.lpVtbl = &hm_vtbl;
	atomic_init(&h->refs, 1);
	h->threadsafe = (type & MALLOC_THREADSAFE) != 0;
	h->protect = (type & MALLOC_EXECUTABLE) ? PAGE_EXECUTE_READWRITE : PAGE_READWRITE;
	pthread_rwlock_init(&h->map_lock, NULL);
	pthread_mutex_init(&h->debug_lock, NULL);
	for (unsigned c = 0; c < NCLASSES; c++)
		for (unsigned l = 0; l < NLEVELS; l++)
			pthread_mutex_init(&h->bins[c][l].lock, NULL);
	atomic_init(&h->ndebug, 0);
	atomic_init(&h->committed, 0);
	atomic_init(&h->live, 0);
	atomic_init(&h->spans, 0);
	atomic_init(&h->larges, 0);
	mb_client_ref(client);
	h->client = client;
	*out = &h->iface;
	return S_OK;
}

/* ---- internal tools ---- */

static void report_block(mb_heap *h, FILE *out, uintptr_t p, size_t size, int level)
{
	static const char *const names[NLEVELS] = {"eTaskCritical", "eAppDomainCritical",
						   "eProcessCritical"};
	if (out == NULL)
		return;
	dbg_lock(h);
	const dbg_rec *r = debug_find(h, p);
	if (r != NULL)
		fprintf(out, "leak: %p %zu bytes %s allocated at %s:%d\n", (void *)p, size,
			names[level], r->file[0] ? r->file : "?", r->line);
	else
		fprintf(out, "leak: %p %zu bytes %s (Alloc, no location)\n", (void *)p, size,
			names[level]);
	dbg_unlock(h);
}

size_t mb_heap_leak_report(IHostMalloc *heap, FILE *out)
{
	mb_heap *h = impl(heap);
	size_t n = 0;

	rd_lock(h);
	for (size_t i = 0; i < h->cap; i++) {
		span *s = h->table[i];
		if (s == NULL)
			continue;
		if (s->cls == LARGE_CLASS) {
			if (!atomic_load(&s->freed)) {
				report_block(h, out, s->base, s->size, s->level);
				n++;
			}
			continue;
		}
		bin *b = &h->bins[s->cls][s->level];
		bin_lock(h, b);
		for (uint32_t k = 0; k < s->nblocks && !s->dying; k++)
			if (s->used[k / 64] & (UINT64_C(1) << (k % 64))) {
				report_block(h, out, s->base + k * s->size, s->size, s->level);
				n++;
			}
		bin_unlock(h, b);
	}
	map_unlock(h);
	if (out != NULL)
		fprintf(out, "%zu block(s) still allocated\n", n);
	return n;
}

void mb_heap_trim(IHostMalloc *heap)
{
	mb_heap *h = impl(heap);
	span *gone = NULL;

	for (unsigned c = 0; c < NCLASSES; c++)
		for (unsigned l = 0; l < NLEVELS; l++) {
			bin *b = &h->bins[c][l];
			bin_lock(h, b);
			for (span *s = b->partial, *n; s != NULL; s = n) {
				n = s->next;
				if (s->nfree != s->nblocks)
					continue;
				list_unlink(b, s);
				s->dying = true;
				s->next = gone;
				gone = s;
			}
			b->empty = 0;
			bin_unlock(h, b);
		}
	while (gone != NULL) {
		span *s = gone;
		gone = s->next;
		wr_lock(h);
		map_remove(h, s);
		map_unlock(h);
		span_release(h, s);
	}
}

void mb_heap_get_stats(IHostMalloc *heap, mb_heap_stats *st)
{
	mb_heap *h = impl(heap);

	st->small_spans = atomic_load(&h->spans);
	st->large_blocks = atomic_load(&h->larges);
	st->live_blocks = atomic_load(&h->live);
	st->committed = atomic_load(&h->committed);
}
