/*
 * heap_internal.h: the pieces of the IHostMalloc heap shared by its three files.
 *
 *   heap_pages.c  the page layer: segments (broker reservations), the granule allocator, the
 *                 pool of free committed granules and its bound, the address directory, trim.
 *   heap_small.c  size classes, the central bins of small spans, the per-thread caches.
 *   heap_debug.c  the DebugAlloc side table (file and line of a block).
 *   heap.c        the IHostMalloc face, the leak report, statistics.
 *
 * Address space comes in segments: one reservation of MB_HEAP_SEG_GRANS granules of 64 KiB (the
 * allocation granularity), all committed at one critical level, so a page handed out at a level
 * was committed at that level. A granule is either free (committed or not), the head or a
 * continuation of a large run, or a small span carved into blocks of one class. A request over
 * MB_HEAP_SEG_GRANS granules gets a "huge" segment of its own.
 *
 * Locks: the page layer has one mutex (page_lock), each central bin its own; a bin lock may be
 * held while taking page_lock, never the reverse. Thread caches have no lock. No lock is held
 * across a round trip to the broker.
 *
 * Shards: the central bins are split in HEAP_NSHARDS shards, and every thread cache is bound to
 * one (the shard with the fewest threads when the cache is made). A span belongs to the shard
 * that made it, so threads of different shards never take blocks from the same span and never
 * write the same allocation-bitmap words or bin locks: the cache lines their Alloc and Free touch
 * are their own. A block freed by a thread of another shard goes back to its span's shard.
 */
#ifndef MB_HEAP_INTERNAL_H
#define MB_HEAP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "client_internal.h"
#include "connection.h"
#include "heap.h"
#include "transport.h"

#define HEAP_NCLASSES	  40
#define HEAP_NLEVELS	  3
#define HEAP_GRAN	  MB_HEAP_SPAN
#define HEAP_GRAN_SHIFT	  16
#define HEAP_SEG_GRANS	  64
#define HEAP_SEG_BYTES	  ((size_t)HEAP_SEG_GRANS * HEAP_GRAN)
#define HEAP_MAX_BLOCKS	  (HEAP_GRAN / 16)
#define HEAP_BITMAP_WORDS (HEAP_MAX_BLOCKS / 64)
/* Per-thread cache: at most this many blocks per (class, level). */
#define HEAP_TCACHE_MAX 32
/* Central bins per (class, level): threads are spread over them (see above). */
#define HEAP_NSHARDS 4
/* Keeps data written by different threads off each other's cache lines. */
#define HEAP_CACHELINE 64

enum {
	GRAN_FREE = 0,
	GRAN_SMALL, /* a span of small blocks */
	GRAN_LARGE, /* the head of a large run */
	GRAN_CONT,  /* a granule of a large run after its head */
	GRAN_BUSY,  /* taken out of the pool while it is decommitted */
};

typedef struct heap_seg heap_seg;

/*
 * One granule of a segment. Small-span fields are guarded by the bin's lock, the rest by
 * page_lock; kind is read without a lock by Free to reject pointers that are not blocks. What
 * Alloc and Free read fills the first cache line; what the bin lock guards starts the second.
 *
 * A block's state byte (1 while it is handed out to the caller) is what lets Free refuse a
 * double free or a pointer never handed out. Alloc sets it with a plain store: only the thread
 * whose cache holds a free block may hand it out. Free clears it with one atomic exchange, so of
 * two threads freeing the same block at once exactly one succeeds. Bytes rather than bits, so
 * that setting one block's state never needs a locked read-modify-write of its neighbours'.
 */
typedef struct heap_gran {
	heap_seg *seg;
	uintptr_t base;
	_Atomic uint8_t kind;
	uint8_t cls;		/* small: class index */
	uint8_t shard;		/* small: the shard whose bin holds the span */
	_Atomic uint8_t live;	/* large head: 1 while the block is allocated */
	uint32_t ngran;		/* large head: granules in the run */
	size_t size;		/* small: block size; large: bytes usable */
	uint64_t magic;		/* small: (off * magic) >> 40 == off / size */
	_Atomic uint8_t *state; /* small: HEAP_MAX_BLOCKS state bytes, in the segment's record */
	uint32_t nblocks;	/* small: blocks in the span */
	_Alignas(HEAP_CACHELINE) uint32_t nfree; /* small: free in the span (not in a cache) */
	struct heap_gran *prev, *next;	      /* small: the bin's list of spans with free blocks */
	uint64_t freebits[HEAP_BITMAP_WORDS]; /* small: free in the span (bin lock) */
} heap_gran;

struct heap_seg {
	uintptr_t base;
	size_t ngran; /* HEAP_SEG_GRANS, or a huge segment's granules */
	int level;
	bool huge;
	uint64_t used;	       /* granules not free (huge: bit 0 while its block is live) */
	uint64_t committed;    /* granules committed (huge: bit 0, the whole segment) */
	heap_seg *prev, *next; /* the heap's list of live segments of this level, or recycled */
	size_t meta_bytes;     /* size of this record's mapping */
	heap_gran gran[];      /* HEAP_SEG_GRANS records (huge: 1), then (not huge) the blocks'
				* state bytes, HEAP_MAX_BLOCKS per granule */
};

/* A small bin: spans of one class committed at one level. */
typedef struct heap_bin {
	_Alignas(HEAP_CACHELINE) pthread_mutex_t lock;
	heap_gran *partial; /* spans with at least one block free in the span */
	unsigned empty;	    /* spans on the list that are entirely free (at most 1 kept) */
} heap_bin;

typedef struct heap_tcache heap_tcache;

/* The directory: granule number (address >> 16) -> segment, a three-level radix tree whose
 * nodes are never freed before the heap, so Free reads it without a lock. */
#define RADIX_TOP_BITS	11
#define RADIX_MID_BITS	10
#define RADIX_LEAF_BITS 10

typedef struct mb_heap {
	IHostMalloc iface; /* first: the pointer handed out is the object */
	atomic_uint refs;
	uint64_t id; /* never reused: thread caches recognise their heap by it */
	mb_client *client;
	bool threadsafe;
	DWORD protect;
	mb_pressure_hook hook; /* trims on eMemoryAvailableLow */

	/* Page layer (heap_pages.c), guarded by page_lock. */
	pthread_mutex_t page_lock;
	heap_seg *segs[HEAP_NLEVELS]; /* live segments per level, huge ones included */
	heap_seg *recycled;	      /* segment records of released segments */
	size_t pool_bytes;	      /* free granules still committed (reused before fresh ones) */
	size_t pool_limit; /* per shard in use: above pool_limit * shards_used, free committed
			    * granules are decommitted */
	/* The broker's last report was eMemoryAvailableLow: no pool is kept until it changes
	 * (written by the notification hook, read by Free). */
	atomic_bool low;
	_Atomic(void *) radix[1u << RADIX_TOP_BITS];

	heap_bin bins[HEAP_NCLASSES][HEAP_NLEVELS][HEAP_NSHARDS];

	/* Thread caches of this heap (heap_small.c), and how many are bound to each shard; guarded
	 * by the registry lock there. */
	heap_tcache *tcaches;
	unsigned shard_users[HEAP_NSHARDS];
	atomic_uint shards_used; /* shards with at least one thread (read by the page layer) */

	/* DebugAlloc records (heap.c). */
	pthread_mutex_t debug_lock;
	struct dbg_rec **dtable;
	size_t dcap, dcount;
	atomic_size_t ndebug;

	/* Statistics, written by many threads: apart from what Alloc and Free read. */
	_Alignas(HEAP_CACHELINE) atomic_size_t committed, spans, larges, segments, round_trip_frees;
} mb_heap;

/* The heap's locks guard a few dozen instructions: a thread that finds one taken spins briefly
 * before it sleeps (glibc's adaptive mutex), rather than paying a futex sleep and a wake-up. */
static inline void mb_heap_lock_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;

	pthread_mutexattr_init(&a);
	pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ADAPTIVE_NP);
	pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
}

/* ---- heap_pages.c ---- */

void mb_heap_pages_init(mb_heap *h);
/* Releases every segment (the heap's last reference). */
void mb_heap_pages_destroy(mb_heap *h);
/* Granules of n (n <= HEAP_SEG_GRANS) at level, committed; *out is the head record. */
HRESULT mb_heap_run_alloc(mb_heap *h, size_t n, int level, heap_gran **out);
/* A huge segment of at least bytes at level, committed. */
HRESULT mb_heap_huge_alloc(mb_heap *h, size_t bytes, int level, heap_gran **out);
/* Gives the granules of a run (small span or large) back to the pool. page_lock not held. */
void mb_heap_run_free(mb_heap *h, heap_gran *g);
/* The granule record holding addr, or NULL when it is not inside a segment of h. Inline: Free
 * calls it for every block. */
static inline heap_gran *mb_heap_gran_of(mb_heap *h, uintptr_t addr)
{
	uintptr_t gno = addr >> HEAP_GRAN_SHIFT;
	size_t t = gno >> (RADIX_MID_BITS + RADIX_LEAF_BITS);
	if (t >= (1u << RADIX_TOP_BITS))
		return NULL;
	_Atomic(void *) *mid = atomic_load_explicit(&h->radix[t], memory_order_acquire);
	if (mid == NULL)
		return NULL;
	_Atomic(void *) *leaf = atomic_load_explicit(
	    &mid[(gno >> RADIX_LEAF_BITS) & ((1u << RADIX_MID_BITS) - 1)], memory_order_acquire);
	if (leaf == NULL)
		return NULL;
	heap_seg *seg =
	    atomic_load_explicit(&leaf[gno & ((1u << RADIX_LEAF_BITS) - 1)], memory_order_acquire);
	if (seg == NULL)
		return NULL;
	if (seg->huge)
		return &seg->gran[0];
	size_t gi = (addr - seg->base) >> HEAP_GRAN_SHIFT;
	return gi < HEAP_SEG_GRANS ? &seg->gran[gi] : NULL;
}
/* Decommits the whole pool and releases empty segments. */
void mb_heap_pages_trim(mb_heap *h);
/* Calls fn on every granule record that is a small span or the head of a large run, with
 * page_lock held. */
void mb_heap_pages_walk(mb_heap *h, void (*fn)(mb_heap *h, heap_gran *g, void *arg), void *arg);
size_t mb_heap_pool_bytes(mb_heap *h);

/* ---- heap_small.c ---- */

/* Set while a thread gives its caches back at exit: the page layer then makes no broker call. */
extern _Thread_local bool mb_heap_thread_exiting;

void mb_heap_small_init(mb_heap *h);
void mb_heap_small_destroy(mb_heap *h);
/* The class of a small request (size <= MB_HEAP_MAX_SMALL), and its block size. */
unsigned mb_heap_class_of(size_t size);
size_t mb_heap_class_size(unsigned cls);
HRESULT mb_heap_small_alloc(mb_heap *h, unsigned cls, int level, void **out);
/* Frees block idx of span g, at p (its state byte already cleared by the caller). */
void mb_heap_small_free(mb_heap *h, heap_gran *g, uint32_t idx, uintptr_t p);
/* Empties the calling thread's cache and the bins' kept empty spans into the page layer. */
void mb_heap_small_trim(mb_heap *h);

/* ---- heap_debug.c ---- */

/* Records file:line for block p (-1 when out of memory). */
int mb_heap_debug_add(mb_heap *h, void *p, const char *file, int line);
/* Drops the record of p, if any. */
void mb_heap_debug_remove(mb_heap *h, uintptr_t p);
/* file:line recorded for p (line -1 when none). */
void mb_heap_debug_describe(mb_heap *h, uintptr_t p, char *file, size_t len, int *line);
void mb_heap_debug_destroy(mb_heap *h);

#endif
