/*
 * heap_small.c: small blocks (up to MB_HEAP_MAX_SMALL bytes): 40 size classes, central bins of
 * 64 KiB spans per (class, level), and a cache per thread and heap.
 *
 * Classes: 16..128 in steps of 16, then four steps per doubling up to 32 KiB (160, 192, 224,
 * 256, 320, ... 28672, 32768); every class is a multiple of 16, so every block is 16-byte
 * aligned.
 *
 * The thread cache holds, per (class, level), up to a few dozen free blocks as (span, index)
 * pairs outside the blocks themselves, so a stray write into a freed block cannot corrupt the
 * heap. Alloc and Free touch only the calling thread's cache and one atomic word of the span's
 * allocation bitmap (which is what lets Free reject double frees and pointers never handed out).
 * An empty cache takes a batch from its shard's central bin (its mutex), a full one gives half
 * back, each block to the bin of its span's shard. A block freed by another thread than the one
 * that allocated it simply goes to the freeing thread's cache and from there back to its span:
 * nothing is lost across threads. A thread's
 * caches are given back when it exits (a pthread key destructor); a heap that is released
 * first marks the caches of its live threads orphaned, and those threads drop them.
 */
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "heap_internal.h"

static const uint32_t class_size[HEAP_NCLASSES] = {
    16,	  32,	48,   64,   80,	   96,	  112,	 128,	160,   192,   224,   256,   320,  384,
    448,  512,	640,  768,  896,   1024,  1280,	 1536,	1792,  2048,  2560,  3072,  3584, 4096,
    5120, 6144, 7168, 8192, 10240, 12288, 14336, 16384, 20480, 24576, 28672, 32768,
};

/* Class of n for n <= 1024 by (n + 15) / 16, above by (n + 127) / 128. */
static uint8_t class_lo[1024 / 16 + 1], class_hi[32768 / 128 + 1];
/* Blocks a thread cache keeps per class (fewer for large blocks), and moves in one batch. */
static uint8_t class_cap[HEAP_NCLASSES];

/* A cached free block: its address and its state byte, so that Alloc reads nothing else (the
 * span is found again through the directory when the block goes back to it). */
typedef struct tslot {
	uintptr_t p;
	_Atomic uint8_t *st;
} tslot;

typedef struct tbin {
	uint32_t n;
	tslot s[HEAP_TCACHE_MAX];
} tbin;

struct heap_tcache {
	mb_heap *heap; /* NULL: the heap was released (orphaned) */
	uint64_t heap_id;
	unsigned shard;		    /* the central bins this thread takes spans from */
	heap_tcache *tnext;	    /* the owning thread's list */
	heap_tcache *hprev, *hnext; /* the heap's list (registry lock) */
	tbin *lv[HEAP_NLEVELS];	    /* HEAP_NCLASSES bins per level, allocated on first use */
};

static pthread_mutex_t registry = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static _Thread_local heap_tcache *tc_last, *tc_list;
_Thread_local bool mb_heap_thread_exiting;

unsigned mb_heap_class_of(size_t n)
{
	return n <= 1024 ? class_lo[(n + 15) / 16] : class_hi[(n + 127) / 128];
}

size_t mb_heap_class_size(unsigned cls)
{
	return class_size[cls];
}

/* ---- central bins ---- */

static void list_push(heap_bin *b, heap_gran *g)
{
	g->prev = NULL;
	g->next = b->partial;
	if (b->partial != NULL)
		b->partial->prev = g;
	b->partial = g;
}

static void list_unlink(heap_bin *b, heap_gran *g)
{
	if (g->prev != NULL)
		g->prev->next = g->next;
	else
		b->partial = g->next;
	if (g->next != NULL)
		g->next->prev = g->prev;
	g->prev = g->next = NULL;
}

static HRESULT span_new(mb_heap *h, unsigned cls, int level, unsigned shard, heap_gran **out)
{
	heap_gran *g;
	HRESULT hr = mb_heap_run_alloc(h, 1, level, &g);

	if (hr != S_OK)
		return hr;
	uint32_t size = class_size[cls], nblocks = (uint32_t)(HEAP_GRAN / size);
	g->cls = (uint8_t)cls;
	g->shard = (uint8_t)shard;
	g->size = size;
	g->nblocks = g->nfree = nblocks;
	g->magic = ((UINT64_C(1) << 40) / size) + 1;
	memset((void *)g->state, 0, nblocks);
	memset(g->freebits, 0, sizeof(g->freebits));
	for (uint32_t w = 0; w < nblocks / 64; w++)
		g->freebits[w] = ~UINT64_C(0);
	if (nblocks % 64 != 0)
		g->freebits[nblocks / 64] = (UINT64_C(1) << (nblocks % 64)) - 1;
	atomic_fetch_add(&h->spans, 1);
	atomic_store_explicit(&g->kind, GRAN_SMALL, memory_order_release);
	*out = g;
	return S_OK;
}

/* Fills b with up to want blocks of (cls, level) from the shard's bin, making a span if it has
 * none. */
static HRESULT refill(mb_heap *h, tbin *b, unsigned cls, int level, unsigned shard, uint32_t want)
{
	heap_bin *bin = &h->bins[cls][level][shard];
	HRESULT hr;

	pthread_mutex_lock(&bin->lock);
	while (b->n < want) {
		heap_gran *g = bin->partial;
		if (g == NULL) {
			pthread_mutex_unlock(&bin->lock);
			if (b->n > 0)
				return S_OK;
			if ((hr = span_new(h, cls, level, shard, &g)) != S_OK)
				return hr;
			pthread_mutex_lock(&bin->lock);
			list_push(bin, g);
			bin->empty++;
			continue;
		}
		if (g->nfree == g->nblocks)
			bin->empty--;
		for (uint32_t w = 0; w < HEAP_BITMAP_WORDS && b->n < want; w++) {
			while (g->freebits[w] != 0 && b->n < want) {
				unsigned bit = (unsigned)__builtin_ctzll(g->freebits[w]);
				g->freebits[w] &= g->freebits[w] - 1;
				uint32_t idx = w * 64 + bit;
				b->s[b->n++] =
				    (tslot){g->base + (uintptr_t)idx * g->size, &g->state[idx]};
				g->nfree--;
			}
		}
		if (g->nfree == 0)
			list_unlink(bin, g);
	}
	pthread_mutex_unlock(&bin->lock);
	return S_OK;
}

/* Gives the first k blocks of b back to their spans (all of class cls at level), under the lock
 * of each span's shard in turn (blocks freed across threads may belong to other shards). */
static void flush(mb_heap *h, tbin *b, unsigned cls, int level, uint32_t k)
{
	heap_gran *dead = NULL, *gs[HEAP_TCACHE_MAX];
	unsigned shards = 0;

	for (uint32_t i = 0; i < k; i++) {
		gs[i] = mb_heap_gran_of(h, b->s[i].p);
		shards |= 1u << gs[i]->shard;
	}
	while (shards != 0) {
		unsigned sh = (unsigned)__builtin_ctz(shards);
		heap_bin *bin = &h->bins[cls][level][sh];
		shards &= shards - 1;
		pthread_mutex_lock(&bin->lock);
		for (uint32_t i = 0; i < k; i++) {
			heap_gran *g = gs[i];
			uint32_t idx = (uint32_t)(b->s[i].st - g->state);
			if (g->shard != sh)
				continue;
			g->freebits[idx / 64] |= UINT64_C(1) << (idx % 64);
			if (g->nfree++ == 0)
				list_push(bin, g);
			if (g->nfree == g->nblocks) {
				if (bin->empty == 0) {
					bin->empty = 1; /* one empty span per bin stays */
				} else {
					list_unlink(bin, g);
					g->next = dead;
					dead = g;
				}
			}
		}
		pthread_mutex_unlock(&bin->lock);
	}
	memmove(b->s, b->s + k, (b->n - k) * sizeof(b->s[0]));
	b->n -= k;
	while (dead != NULL) {
		heap_gran *g = dead;
		dead = g->next;
		g->next = NULL;
		atomic_fetch_sub(&h->spans, 1);
		mb_heap_run_free(h, g);
	}
}

/* ---- thread caches ---- */

static void tcache_drop(mb_heap *h, heap_tcache *tc)
{
	for (int l = 0; l < HEAP_NLEVELS; l++) {
		if (tc->lv[l] == NULL)
			continue;
		if (h != NULL)
			for (unsigned c = 0; c < HEAP_NCLASSES; c++)
				if (tc->lv[l][c].n > 0)
					flush(h, &tc->lv[l][c], c, l, tc->lv[l][c].n);
		free(tc->lv[l]);
		tc->lv[l] = NULL;
	}
}

/* Registry lock held. */
static void heap_list_unlink(heap_tcache *tc)
{
	if (tc->hprev != NULL)
		tc->hprev->hnext = tc->hnext;
	else
		tc->heap->tcaches = tc->hnext;
	if (tc->hnext != NULL)
		tc->hnext->hprev = tc->hprev;
	if (--tc->heap->shard_users[tc->shard] == 0)
		atomic_fetch_sub(&tc->heap->shards_used, 1);
}

/* Thread exit: every cache of the thread goes back to its heap (if that still exists). */
static void on_thread_exit(void *unused)
{
	(void)unused;
	/* Other thread-exit destructors (the wire's unpack arena) may have run already: no broker
	 * call from here. Whatever this leaves above the pool's bound goes at the next free. */
	mb_heap_thread_exiting = true;
	pthread_mutex_lock(&registry);
	while (tc_list != NULL) {
		heap_tcache *tc = tc_list;
		tc_list = tc->tnext;
		if (tc->heap != NULL) {
			tcache_drop(tc->heap, tc);
			heap_list_unlink(tc);
		} else {
			tcache_drop(NULL, tc);
		}
		free(tc);
	}
	tc_last = NULL;
	pthread_mutex_unlock(&registry);
}

static void init_once(void)
{
	for (size_t n = 0; n <= 1024; n += 16) {
		unsigned c = 0;
		while (class_size[c] < n)
			c++;
		class_lo[n / 16] = (uint8_t)c;
	}
	for (size_t n = 0; n <= 32768; n += 128) {
		unsigned c = 0;
		while (class_size[c] < n)
			c++;
		class_hi[n / 128] = (uint8_t)c;
	}
	for (unsigned c = 0; c < HEAP_NCLASSES; c++) {
		size_t cap = (128 * 1024) / class_size[c];
		class_cap[c] = (uint8_t)(cap < 2		 ? 2
					 : cap > HEAP_TCACHE_MAX ? HEAP_TCACHE_MAX
								 : cap);
	}
	pthread_key_create(&exit_key, on_thread_exit);
}

/* Frees the calling thread's caches whose heap was released; registry lock held. */
static void prune_orphans(void)
{
	for (heap_tcache **p = &tc_list, *tc; (tc = *p) != NULL;) {
		if (tc->heap == NULL) {
			*p = tc->tnext;
			if (tc_last == tc)
				tc_last = NULL;
			tcache_drop(NULL, tc);
			free(tc);
			continue;
		}
		p = &tc->tnext;
	}
}

/* The calling thread's cache for h, made on first use (NULL when out of memory). */
static heap_tcache *tcache_find(mb_heap *h)
{
	heap_tcache *tc;

	pthread_mutex_lock(&registry);
	prune_orphans();
	for (tc = tc_list; tc != NULL; tc = tc->tnext)
		if (tc->heap == h && tc->heap_id == h->id)
			break;
	if (tc == NULL && (tc = calloc(1, sizeof(*tc))) != NULL) {
		tc->heap = h;
		tc->heap_id = h->id;
		/* The shard with the fewest threads, so that a few busy threads share no span. */
		for (unsigned s = 1; s < HEAP_NSHARDS; s++)
			if (h->shard_users[s] < h->shard_users[tc->shard])
				tc->shard = s;
		if (h->shard_users[tc->shard]++ == 0)
			atomic_fetch_add(&h->shards_used, 1);
		tc->hnext = h->tcaches;
		if (tc->hnext != NULL)
			tc->hnext->hprev = tc;
		h->tcaches = tc;
		tc->tnext = tc_list;
		tc_list = tc;
		pthread_setspecific(exit_key, (void *)1);
	}
	pthread_mutex_unlock(&registry);
	tc_last = tc;
	return tc;
}

/* The calling thread's cache for h with the bins of level, made on first use. */
static __attribute__((noinline)) heap_tcache *tcache_slow(mb_heap *h, int level)
{
	heap_tcache *tc = tc_last;

	if (tc == NULL || tc->heap != h || tc->heap_id != h->id)
		if ((tc = tcache_find(h)) == NULL)
			return NULL;
	if (tc->lv[level] == NULL && (tc->lv[level] = calloc(HEAP_NCLASSES, sizeof(tbin))) == NULL)
		return NULL;
	return tc;
}

static inline __attribute__((always_inline)) tbin *tbin_of(mb_heap *h, unsigned cls, int level,
							   unsigned *shard)
{
	heap_tcache *tc = tc_last;

	if (__builtin_expect(
		tc == NULL || tc->heap != h || tc->heap_id != h->id || tc->lv[level] == NULL, 0))
		if ((tc = tcache_slow(h, level)) == NULL)
			return NULL;
	*shard = tc->shard;
	return &tc->lv[level][cls];
}

HRESULT mb_heap_small_alloc(mb_heap *h, unsigned cls, int level, void **out)
{
	unsigned shard;
	tbin *b = tbin_of(h, cls, level, &shard);
	HRESULT hr;

	if (b == NULL)
		return mb_client_error(E_OUTOFMEMORY, "no memory for the thread's heap cache");
	if (b->n == 0 && (hr = refill(h, b, cls, level, shard, (class_cap[cls] + 1) / 2)) != S_OK)
		return hr;
	tslot s = b->s[--b->n];
	/* A plain store: the block is this thread's to hand out (heap_internal.h). */
	atomic_store_explicit(s.st, 1, memory_order_relaxed);
	*out = (void *)s.p;
	return S_OK;
}

void mb_heap_small_free(mb_heap *h, heap_gran *g, uint32_t idx, uintptr_t p)
{
	unsigned cls = g->cls, shard;
	int level = g->seg->level;
	tbin *b = tbin_of(h, cls, level, &shard);

	if (b == NULL) {
		/* No cache (out of memory): straight back to the span. */
		tbin one = {.n = 1, .s = {{p, &g->state[idx]}}};
		flush(h, &one, cls, level, 1);
		return;
	}
	if (b->n >= class_cap[cls])
		flush(h, b, cls, level, b->n / 2);
	b->s[b->n++] = (tslot){p, &g->state[idx]};
}

void mb_heap_small_trim(mb_heap *h)
{
	heap_tcache *tc = tc_last;

	if (tc == NULL || tc->heap != h || tc->heap_id != h->id)
		tc = tcache_find(h);
	if (tc != NULL)
		for (int l = 0; l < HEAP_NLEVELS; l++)
			if (tc->lv[l] != NULL)
				for (unsigned c = 0; c < HEAP_NCLASSES; c++)
					if (tc->lv[l][c].n > 0)
						flush(h, &tc->lv[l][c], c, l, tc->lv[l][c].n);
	for (unsigned c = 0; c < HEAP_NCLASSES; c++)
		for (unsigned i = 0; i < HEAP_NLEVELS * HEAP_NSHARDS; i++) {
			heap_bin *bin = &h->bins[c][i / HEAP_NSHARDS][i % HEAP_NSHARDS];
			heap_gran *dead = NULL;
			pthread_mutex_lock(&bin->lock);
			for (heap_gran *g = bin->partial, *n; g != NULL; g = n) {
				n = g->next;
				if (g->nfree != g->nblocks)
					continue;
				list_unlink(bin, g);
				g->next = dead;
				dead = g;
			}
			bin->empty = 0;
			pthread_mutex_unlock(&bin->lock);
			while (dead != NULL) {
				heap_gran *g = dead;
				dead = g->next;
				g->next = NULL;
				atomic_fetch_sub(&h->spans, 1);
				mb_heap_run_free(h, g);
			}
		}
}

void mb_heap_small_init(mb_heap *h)
{
	pthread_once(&once, init_once);
	for (unsigned c = 0; c < HEAP_NCLASSES; c++)
		for (unsigned i = 0; i < HEAP_NLEVELS * HEAP_NSHARDS; i++)
			mb_heap_lock_init(&h->bins[c][i / HEAP_NSHARDS][i % HEAP_NSHARDS].lock);
}

void mb_heap_small_destroy(mb_heap *h)
{
	/* Live threads' caches of this heap are orphaned; their threads free them. */
	pthread_mutex_lock(&registry);
	for (heap_tcache *tc = h->tcaches; tc != NULL; tc = tc->hnext)
		tc->heap = NULL;
	h->tcaches = NULL;
	prune_orphans();
	pthread_mutex_unlock(&registry);
	for (unsigned c = 0; c < HEAP_NCLASSES; c++)
		for (unsigned i = 0; i < HEAP_NLEVELS * HEAP_NSHARDS; i++)
			pthread_mutex_destroy(&h->bins[c][i / HEAP_NSHARDS][i % HEAP_NSHARDS].lock);
}
