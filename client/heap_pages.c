/*
 * heap_pages.c: the heap's page layer. Segments are broker reservations of 64 granules (4 MiB)
 * per critical level; runs of granules are carved from them and committed through the broker
 * (from commit credit, so usually without a round trip). A freed run stays committed in the
 * segment ("the pool") and is preferred by the next request at that level, so a program that
 * frees and allocates large blocks makes no broker call at all in the steady state. The pool is
 * bounded (pool_limit, $MEMBROKER_HEAP_POOL, default MB_HEAP_POOL_DEFAULT, per shard of threads
 * in use): above it, free
 * committed granules are decommitted (segments with the fewest used granules first, whole empty
 * segments released), and mb_heap_pages_trim empties it (explicit trim, eMemoryAvailableLow).
 *
 * Every broker call is made with page_lock released: granules being committed or decommitted
 * are marked used (GRAN_BUSY) meanwhile, so nobody else takes them.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "client_internal.h"
#include "heap_internal.h"
#include "mb_size.h"

#define RADIX_MID_SIZE	(1u << RADIX_MID_BITS)
#define RADIX_LEAF_SIZE (1u << RADIX_LEAF_BITS)
/* Work picked per pass of reclaim (each op is one broker call). */
#define MAX_OPS 16

static uint64_t gran_mask(size_t first, size_t n)
{
	uint64_t m = n >= 64 ? ~UINT64_C(0) : (UINT64_C(1) << n) - 1;
	return m << first;
}

static size_t popcount(uint64_t x)
{
	return (size_t)__builtin_popcountll(x);
}

/* ---- the directory ---- */

typedef _Atomic(void *) radix_slot;

/* Called with page_lock held. -1 when out of memory for a node. */
static int radix_set(mb_heap *h, uintptr_t gno, heap_seg *seg)
{
	size_t t = gno >> (RADIX_MID_BITS + RADIX_LEAF_BITS);
	if (t >= (1u << RADIX_TOP_BITS))
		return -1;
	radix_slot *mid = atomic_load_explicit(&h->radix[t], memory_order_acquire);
	if (mid == NULL) {
		if (seg == NULL)
			return 0;
		if ((mid = calloc(RADIX_MID_SIZE, sizeof(*mid))) == NULL)
			return -1;
		atomic_store_explicit(&h->radix[t], mid, memory_order_release);
	}
	radix_slot *slot = &mid[(gno >> RADIX_LEAF_BITS) & (RADIX_MID_SIZE - 1)];
	radix_slot *leaf = atomic_load_explicit(slot, memory_order_acquire);
	if (leaf == NULL) {
		if (seg == NULL)
			return 0;
		if ((leaf = calloc(RADIX_LEAF_SIZE, sizeof(*leaf))) == NULL)
			return -1;
		atomic_store_explicit(slot, leaf, memory_order_release);
	}
	atomic_store_explicit(&leaf[gno & (RADIX_LEAF_SIZE - 1)], seg, memory_order_release);
	return 0;
}

static void radix_destroy(mb_heap *h)
{
	for (size_t t = 0; t < (1u << RADIX_TOP_BITS); t++) {
		radix_slot *mid = atomic_load(&h->radix[t]);
		if (mid == NULL)
			continue;
		for (size_t m = 0; m < RADIX_MID_SIZE; m++)
			free(atomic_load(&mid[m]));
		free(mid);
	}
}

/* ---- segments ---- */

void mb_heap_pages_init(mb_heap *h)
{
	const char *env = getenv("MEMBROKER_HEAP_POOL");
	uint64_t v;

	mb_heap_lock_init(&h->page_lock);
	h->pool_limit = MB_HEAP_POOL_DEFAULT;
	if (env != NULL && mb_parse_size(env, 0, &v) == 0)
		h->pool_limit = (size_t)v;
}

/* A segment record (metadata is mapped, not taken from the process heap); page_lock held. The
 * state bytes of a normal segment's granules follow its granule records; the kernel backs only
 * the pages of them that spans use, and a span clears its own when it is made. */
static heap_seg *seg_record(mb_heap *h, bool huge)
{
	size_t head = sizeof(heap_seg) + (huge ? 1 : HEAP_SEG_GRANS) * sizeof(heap_gran);
	size_t want = head + (huge ? 0 : (size_t)HEAP_SEG_GRANS * HEAP_MAX_BLOCKS);

	for (heap_seg **p = &h->recycled; *p != NULL; p = &(*p)->next)
		if ((*p)->meta_bytes >= want) {
			heap_seg *s = *p;
			*p = s->next;
			size_t bytes = s->meta_bytes;
			memset(s, 0, head);
			s->meta_bytes = bytes;
			return s;
		}
	void *m = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	heap_seg *s = m;
	s->meta_bytes = want;
	return s;
}

static void seg_link(mb_heap *h, heap_seg *s)
{
	s->prev = NULL;
	s->next = h->segs[s->level];
	if (s->next != NULL)
		s->next->prev = s;
	h->segs[s->level] = s;
}

static void seg_unlink(mb_heap *h, heap_seg *s)
{
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		h->segs[s->level] = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
}

/*
 * Takes s out of the heap's list and out of the directory before it is released; page_lock held.
 * The directory must be cleared before the release call, not after: once the broker (or the
 * reservation credit) has the range back, another thread may reserve the same addresses as a new
 * segment and enter them, and a late clearing would erase the new segment's entries.
 */
static void seg_retire(mb_heap *h, heap_seg *s)
{
	seg_unlink(h, s);
	for (size_t i = 0; i < s->ngran; i++)
		radix_set(h, (s->base >> HEAP_GRAN_SHIFT) + i, NULL);
}

/* Keeps the record of a retired, released segment for reuse; page_lock held. */
static void seg_forget(mb_heap *h, heap_seg *s)
{
	s->next = h->recycled;
	h->recycled = s;
	atomic_fetch_sub(&h->segments, 1);
}

/*
 * Reserves a segment (a round trip, page_lock not held) and enters it; for a huge one, commits it
 * whole in the same call. Returns with page_lock held in every case.
 */
static HRESULT seg_new(mb_heap *h, int level, size_t huge_bytes, heap_seg **out)
{
	bool huge = huge_bytes != 0;
	size_t bytes = huge ? huge_bytes : HEAP_SEG_BYTES;
	void *mem;
	HRESULT hr;

	pthread_mutex_unlock(&h->page_lock);
	hr = mb_virtual_alloc(h->client, NULL, bytes, huge ? MEM_RESERVE | MEM_COMMIT : MEM_RESERVE,
			      h->protect, (EMemoryCriticalLevel)level, &mem);
	pthread_mutex_lock(&h->page_lock);
	if (hr != S_OK)
		return hr;
	heap_seg *s = seg_record(h, huge);
	if (s == NULL)
		goto fail;
	s->base = (uintptr_t)mem;
	s->ngran = bytes / HEAP_GRAN;
	s->level = level;
	s->huge = huge;
	_Atomic uint8_t *states = huge ? NULL : (_Atomic uint8_t *)&s->gran[HEAP_SEG_GRANS];
	for (size_t i = 0; i < (huge ? 1 : HEAP_SEG_GRANS); i++) {
		s->gran[i].seg = s;
		s->gran[i].base = s->base + i * HEAP_GRAN;
		s->gran[i].state = huge ? NULL : states + i * HEAP_MAX_BLOCKS;
	}
	for (size_t i = 0; i < s->ngran; i++)
		if (radix_set(h, (s->base >> HEAP_GRAN_SHIFT) + i, s) != 0) {
			for (size_t j = 0; j < i; j++)
				radix_set(h, (s->base >> HEAP_GRAN_SHIFT) + j, NULL);
			s->next = h->recycled;
			h->recycled = s;
			goto fail;
		}
	if (huge) {
		s->committed = 1;
		atomic_fetch_add(&h->committed, bytes);
	}
	atomic_fetch_add(&h->segments, 1);
	seg_link(h, s);
	*out = s;
	return S_OK;
fail:
	pthread_mutex_unlock(&h->page_lock);
	mb_virtual_free(h->client, mem, 0, MEM_RELEASE);
	pthread_mutex_lock(&h->page_lock);
	return mb_client_error(E_OUTOFMEMORY, "no memory for heap metadata");
}

/* The shortest maximal stretch of set bits in m that holds n (its start in *at, its length
 * returned), 0 when there is none. */
static size_t best_run(uint64_t m, size_t n, size_t *at)
{
	size_t best = 0;

	while (m != 0) {
		size_t i = (size_t)__builtin_ctzll(m);
		uint64_t rest = ~(m >> i);
		size_t len = rest == 0 ? 64 - i : (size_t)__builtin_ctzll(rest);
		if (len >= n && (best == 0 || len < best)) {
			best = len;
			*at = i;
			if (len == n)
				break;
		}
		m = i + len >= 64 ? 0 : m & (~UINT64_C(0) << (i + len));
	}
	return best;
}

/*
 * page_lock held: a stretch of n free granules at level, committed ones preferred. Best fit (the
 * shortest free stretch that holds n, over every segment): first fit cuts long committed
 * stretches for short runs and spans, and the runs that then find no stretch long enough commit
 * fresh granules while the pool fills with fragments and goes over its bound.
 */
static heap_seg *find_stretch(mb_heap *h, size_t n, int level, size_t *first)
{
	for (int pass = 0; pass < 2; pass++) {
		heap_seg *best = NULL;
		size_t best_len = 0;
		for (heap_seg *s = h->segs[level]; s != NULL; s = s->next) {
			if (s->huge)
				continue;
			uint64_t m = ~s->used;
			if (pass == 0)
				m &= s->committed;
			size_t at = 0, len = best_run(m, n, &at);
			if (len != 0 && (best == NULL || len < best_len)) {
				best = s;
				best_len = len;
				*first = at;
				if (len == n)
					break;
			}
		}
		if (best != NULL)
			return best;
	}
	return NULL;
}

static HRESULT commit_range(mb_heap *h, heap_seg *s, size_t first, size_t n)
{
	void *mem;

	return mb_virtual_alloc(h->client, (void *)(s->base + first * HEAP_GRAN), n * HEAP_GRAN,
				MEM_COMMIT, h->protect, (EMemoryCriticalLevel)s->level, &mem);
}

HRESULT mb_heap_run_alloc(mb_heap *h, size_t n, int level, heap_gran **out)
{
	heap_seg *s;
	size_t first = 0;
	HRESULT hr = S_OK;

	pthread_mutex_lock(&h->page_lock);
	while ((s = find_stretch(h, n, level, &first)) == NULL)
		if ((hr = seg_new(h, level, 0, &s)) != S_OK) {
			pthread_mutex_unlock(&h->page_lock);
			return hr;
		}
	uint64_t mask = gran_mask(first, n), fresh = mask & ~s->committed;
	s->used |= mask;
	h->pool_bytes -= popcount(mask & s->committed) * HEAP_GRAN;
	for (size_t i = first; i < first + n; i++)
		atomic_store(&s->gran[i].kind, GRAN_BUSY);
	if (fresh != 0) {
		/* Commit what is not committed yet, each stretch in one call, lock released. */
		uint64_t done = 0;
		pthread_mutex_unlock(&h->page_lock);
		for (size_t i = first; i < first + n && hr == S_OK;) {
			if (!((fresh >> i) & 1)) {
				i++;
				continue;
			}
			size_t j = i;
			while (j < first + n && ((fresh >> j) & 1))
				j++;
			if ((hr = commit_range(h, s, i, j - i)) == S_OK)
				done |= gran_mask(i, j - i);
			i = j;
		}
		pthread_mutex_lock(&h->page_lock);
		s->committed |= done;
		atomic_fetch_add(&h->committed, popcount(done) * HEAP_GRAN);
		if (hr != S_OK) {
			/* What was committed stays in the pool. */
			for (size_t i = first; i < first + n; i++)
				atomic_store(&s->gran[i].kind, GRAN_FREE);
			s->used &= ~mask;
			h->pool_bytes += popcount(mask & s->committed) * HEAP_GRAN;
			pthread_mutex_unlock(&h->page_lock);
			return hr;
		}
	}
	for (size_t i = first + 1; i < first + n; i++)
		atomic_store(&s->gran[i].kind, GRAN_CONT);
	s->gran[first].ngran = (uint32_t)n;
	pthread_mutex_unlock(&h->page_lock);
	*out = &s->gran[first];
	return S_OK;
}

HRESULT mb_heap_huge_alloc(mb_heap *h, size_t bytes, int level, heap_gran **out)
{
	size_t n = (bytes + HEAP_GRAN - 1) / HEAP_GRAN;
	heap_seg *best = NULL;
	HRESULT hr;

	pthread_mutex_lock(&h->page_lock);
	/* A free huge segment of the level that is big enough and not much bigger. */
	for (heap_seg *s = h->segs[level]; s != NULL; s = s->next)
		if (s->huge && s->used == 0 && s->ngran >= n && s->ngran <= n + n / 4 &&
		    (best == NULL || s->ngran < best->ngran))
			best = s;
	if (best != NULL) {
		h->pool_bytes -= best->ngran * HEAP_GRAN;
	} else if ((hr = seg_new(h, level, n * HEAP_GRAN, &best)) != S_OK) {
		pthread_mutex_unlock(&h->page_lock);
		return hr;
	}
	best->used = 1;
	best->gran[0].ngran = (uint32_t)best->ngran;
	atomic_store(&best->gran[0].kind, GRAN_BUSY);
	pthread_mutex_unlock(&h->page_lock);
	*out = &best->gran[0];
	return S_OK;
}

/* ---- giving memory back ---- */

typedef struct io_op {
	heap_seg *seg;
	size_t first, n; /* decommit; release: the whole segment */
	bool release;
} io_op;

/* page_lock held: uncommitted, unused segments of level beyond the first are released. */
static heap_seg *excess_empty(mb_heap *h, int level, bool all)
{
	bool seen = false;

	for (heap_seg *s = h->segs[level]; s != NULL; s = s->next)
		if (!s->huge && s->used == 0 && s->committed == 0) {
			if (seen || all)
				return s;
			seen = true;
		}
	return NULL;
}

/*
 * page_lock held: picks broker calls that bring the pool down to target (and release empty
 * segments: uncommitted ones beyond one per level; every empty one when all). Free huge
 * segments and entirely free segments are released whole; otherwise a stretch of free committed
 * granules of the segment with the fewest used granules is decommitted.
 */
static int pick(mb_heap *h, size_t target, bool all, io_op *ops)
{
	int k = 0;

	while (k < MAX_OPS) {
		heap_seg *victim = NULL;
		for (int l = 0; l < HEAP_NLEVELS && victim == NULL; l++)
			victim = excess_empty(h, l, all);
		if (victim == NULL && h->pool_bytes > target) {
			size_t best_used = SIZE_MAX;
			for (int l = 0; l < HEAP_NLEVELS; l++)
				for (heap_seg *s = h->segs[l]; s != NULL; s = s->next) {
					if ((s->committed & ~s->used) == 0 || (s->huge && s->used))
						continue;
					size_t u = s->huge ? 0 : popcount(s->used);
					if (u < best_used) {
						best_used = u;
						victim = s;
					}
				}
		}
		if (victim == NULL)
			break;
		io_op *op = &ops[k++];
		op->seg = victim;
		if (victim->used == 0) {
			op->release = true;
			h->pool_bytes -= victim->huge ? victim->ngran * HEAP_GRAN
						      : popcount(victim->committed) * HEAP_GRAN;
			seg_retire(h, victim);
			continue;
		}
		uint64_t m = victim->committed & ~victim->used;
		size_t first = (size_t)__builtin_ctzll(m), n = 0;
		while (first + n < 64 && ((m >> (first + n)) & 1))
			n++;
		op->release = false;
		op->first = first;
		op->n = n;
		victim->used |= gran_mask(first, n);
		for (size_t i = first; i < first + n; i++)
			atomic_store(&victim->gran[i].kind, GRAN_BUSY);
		h->pool_bytes -= n * HEAP_GRAN;
	}
	return k;
}

/* Carries out k picked operations with page_lock released, then books them. false when a
 * decommit failed (the broker is unreachable). Called and returns with page_lock held. */
static bool run_ops(mb_heap *h, io_op *ops, int k)
{
	HRESULT hr[MAX_OPS];
	bool failed = false;

	pthread_mutex_unlock(&h->page_lock);
	for (int i = 0; i < k; i++) {
		io_op *op = &ops[i];
		if (op->release)
			hr[i] = mb_virtual_free(h->client, (void *)op->seg->base, 0, MEM_RELEASE);
		else
			hr[i] = mb_virtual_free(h->client,
						(void *)(op->seg->base + op->first * HEAP_GRAN),
						op->n * HEAP_GRAN, MEM_DECOMMIT);
		atomic_fetch_add(&h->round_trip_frees, 1);
	}
	pthread_mutex_lock(&h->page_lock);
	for (int i = 0; i < k; i++) {
		io_op *op = &ops[i];
		heap_seg *s = op->seg;
		if (op->release) {
			/* Released, or the broker is gone: either way the segment is no longer the
			 * heap's to use. */
			size_t bytes =
			    s->huge ? s->ngran * HEAP_GRAN : popcount(s->committed) * HEAP_GRAN;
			atomic_fetch_sub(&h->committed, bytes);
			seg_forget(h, s);
			continue;
		}
		uint64_t mask = gran_mask(op->first, op->n);
		for (size_t g = op->first; g < op->first + op->n; g++)
			atomic_store(&s->gran[g].kind, GRAN_FREE);
		s->used &= ~mask;
		if (hr[i] == S_OK) {
			s->committed &= ~mask;
			atomic_fetch_sub(&h->committed, op->n * HEAP_GRAN);
		} else {
			h->pool_bytes += op->n * HEAP_GRAN; /* still committed */
			failed = true;
		}
	}
	return !failed;
}

/* Runs pick and run_ops until nothing is left to do. Called and returns with page_lock held. */
static void reclaim(mb_heap *h, size_t target, bool all)
{
	io_op ops[MAX_OPS];
	int k;

	while ((k = pick(h, target, all, ops)) > 0)
		if (!run_ops(h, ops, k))
			break; /* the broker is unreachable: do not loop on it */
}

void mb_heap_run_free(mb_heap *h, heap_gran *g)
{
	heap_seg *s = g->seg;

	pthread_mutex_lock(&h->page_lock);
	if (s->huge) {
		s->used = 0;
		atomic_store(&g->kind, GRAN_FREE);
		h->pool_bytes += s->ngran * HEAP_GRAN;
	} else {
		size_t first = (size_t)(g - s->gran), n = g->ngran;
		for (size_t i = first; i < first + n; i++)
			atomic_store(&s->gran[i].kind, GRAN_FREE);
		s->used &= ~gran_mask(first, n);
		h->pool_bytes += n * HEAP_GRAN;
	}
	/* The bound grows with the shards in use (the threads using the heap, up to HEAP_NSHARDS):
	 * each thread's large blocks come and go, and one bound shared by all would make them
	 * decommit and commit each other's granules. */
	unsigned shards = atomic_load_explicit(&h->shards_used, memory_order_relaxed);
	size_t limit = atomic_load_explicit(&h->low, memory_order_relaxed)
			   ? 0
			   : h->pool_limit * (shards > 1 ? shards : 1);
	if (h->pool_bytes > limit && !mb_heap_thread_exiting) {
		/* Over the bound: the run just freed goes back at once, in one broker call (its
		 * segment released whole if nothing else is left in it), which is what the heap
		 * would cost without a pool. */
		io_op op = {.seg = s, .release = s->huge || s->used == 0};
		if (op.release) {
			h->pool_bytes -=
			    s->huge ? s->ngran * HEAP_GRAN : popcount(s->committed) * HEAP_GRAN;
			seg_retire(h, s);
		} else {
			op.first = (size_t)(g - s->gran);
			op.n = g->ngran;
			s->used |= gran_mask(op.first, op.n);
			for (size_t i = op.first; i < op.first + op.n; i++)
				atomic_store(&s->gran[i].kind, GRAN_BUSY);
			h->pool_bytes -= op.n * HEAP_GRAN;
		}
		run_ops(h, &op, 1);
		if (h->pool_bytes > limit)
			reclaim(h, limit, false);
	}
	pthread_mutex_unlock(&h->page_lock);
}

void mb_heap_pages_trim(mb_heap *h)
{
	pthread_mutex_lock(&h->page_lock);
	reclaim(h, 0, true);
	pthread_mutex_unlock(&h->page_lock);
}

size_t mb_heap_pool_bytes(mb_heap *h)
{
	pthread_mutex_lock(&h->page_lock);
	size_t n = h->pool_bytes;
	pthread_mutex_unlock(&h->page_lock);
	return n;
}

void mb_heap_pages_walk(mb_heap *h, void (*fn)(mb_heap *h, heap_gran *g, void *arg), void *arg)
{
	pthread_mutex_lock(&h->page_lock);
	for (int l = 0; l < HEAP_NLEVELS; l++)
		for (heap_seg *s = h->segs[l]; s != NULL; s = s->next)
			for (size_t i = 0; i < (s->huge ? 1 : HEAP_SEG_GRANS); i++) {
				uint8_t k = atomic_load(&s->gran[i].kind);
				if (k == GRAN_SMALL || k == GRAN_LARGE)
					fn(h, &s->gran[i], arg);
			}
	pthread_mutex_unlock(&h->page_lock);
}

void mb_heap_pages_destroy(mb_heap *h)
{
	for (int l = 0; l < HEAP_NLEVELS; l++)
		while (h->segs[l] != NULL) {
			heap_seg *s = h->segs[l];
			seg_unlink(h, s);
			mb_virtual_free(h->client, (void *)s->base, 0, MEM_RELEASE);
			atomic_fetch_sub(&h->committed, s->huge
							    ? s->ngran * HEAP_GRAN
							    : popcount(s->committed) * HEAP_GRAN);
			s->next = h->recycled;
			h->recycled = s;
		}
	while (h->recycled != NULL) {
		heap_seg *s = h->recycled;
		h->recycled = s->next;
		munmap(s, s->meta_bytes);
	}
	radix_destroy(h);
	pthread_mutex_destroy(&h->page_lock);
}
