/*
 * heap.h: IHostMalloc, a general-purpose heap whose memory comes only from the broker (internal).
 *
 * Small requests (up to MB_HEAP_MAX_SMALL bytes) are served from per-thread caches over 64 KiB
 * spans of one size class; larger ones are runs of 64 KiB granules carved from 4 MiB segments
 * (one broker reservation each), or a reservation of their own above 4 MiB. Segments are per
 * critical level, so every byte handed out at a level was committed at that level. Freed large
 * runs and empty spans stay committed in a pool of at most MB_HEAP_POOL_DEFAULT bytes
 * ($MEMBROKER_HEAP_POOL overrides it) per shard of threads in use (4 shards at most) and are
 * reused before anything new is committed; the pool is given back by mb_heap_trim and when the
 * broker reports eMemoryAvailableLow, and none is kept while the pressure stays Low. Metadata
 * lives outside the blocks, so a stray write into a block cannot corrupt the heap, and Free can
 * verify every pointer. Design in heap_internal.h.
 */
#ifndef MB_HEAP_H
#define MB_HEAP_H

#include <stddef.h>
#include <stdio.h>

#include "membroker.h"

#define MB_HEAP_SPAN	     ((size_t)65536)
#define MB_HEAP_MAX_SMALL    ((size_t)32768)
#define MB_HEAP_POOL_DEFAULT ((size_t)16 << 20)

/*
 * Creates a heap bound to client (which it holds a reference on) with one reference owned by the
 * caller. type: MALLOC_THREADSAFE and/or MALLOC_EXECUTABLE; other bits are E_INVALIDARG.
 */
HRESULT mb_heap_create(mb_client *client, DWORD type, IHostMalloc **out);

/*
 * Writes one line per block still allocated (address, size, level, and file:line for blocks from
 * DebugAlloc) to out (NULL: count only). Returns the number of such blocks. The heap must not be
 * used by other threads meanwhile if it is not MALLOC_THREADSAFE.
 */
size_t mb_heap_leak_report(IHostMalloc *heap, FILE *out);

/*
 * Gives back to the broker what the heap holds without using it: the calling thread's cache,
 * empty spans, the pool (decommitted) and empty segments (released). Other threads' caches
 * (at most a few dozen blocks per size class each) stay. Runs by itself on eMemoryAvailableLow.
 */
void mb_heap_trim(IHostMalloc *heap);

/* Figures of a heap, for tests and tools. */
typedef struct mb_heap_stats {
	size_t small_spans;  /* 64 KiB spans of small blocks (including one empty kept per bin) */
	size_t large_blocks; /* live blocks over MB_HEAP_MAX_SMALL */
	size_t live_blocks;  /* allocated blocks, small and large */
	size_t committed;    /* bytes the heap holds committed from the broker */
	size_t pool;	     /* of those, free granules kept committed for reuse */
	size_t segments;     /* reservations the heap holds */
	size_t in_use;	     /* bytes of the live blocks (rounded to their class or granules) */
} mb_heap_stats;

void mb_heap_get_stats(IHostMalloc *heap, mb_heap_stats *stats);

/* Usable size of the live block at p (its class or its granules), 0 if p is not one. For a
 * runtime's realloc. */
size_t mb_heap_block_size(IHostMalloc *heap, const void *p);

#endif
