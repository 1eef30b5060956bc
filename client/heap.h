/*
 * heap.h: IHostMalloc, a general-purpose heap whose memory comes only from the broker (internal).
 *
 * Small requests (up to MB_HEAP_MAX_SMALL bytes) are served from 64 KiB spans of one size class,
 * each span its own reservation committed at one critical level; larger requests get a reservation
 * of their own. Spans are per (size class, level), so every byte handed out at a level was
 * committed at that level. Metadata lives outside the spans (in the process heap), so a stray write
 * into a block cannot corrupt the heap, and Free can verify every pointer.
 */
#ifndef MB_HEAP_H
#define MB_HEAP_H

#include <stddef.h>
#include <stdio.h>

#include "membroker.h"

#define MB_HEAP_SPAN	  ((size_t)65536)
#define MB_HEAP_MAX_SMALL ((size_t)32768)

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

/* Returns the cached empty spans to the broker (as a memory-pressure response). */
void mb_heap_trim(IHostMalloc *heap);

/* Figures of a heap, for tests and tools. */
typedef struct mb_heap_stats {
	size_t small_spans;  /* committed 64 KiB spans (including cached empty ones) */
	size_t large_blocks; /* blocks with a reservation of their own */
	size_t live_blocks;  /* allocated blocks, small and large */
	size_t committed;    /* bytes the heap holds committed from the broker */
} mb_heap_stats;

void mb_heap_get_stats(IHostMalloc *heap, mb_heap_stats *stats);

#endif
